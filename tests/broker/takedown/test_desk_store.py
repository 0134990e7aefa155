"""The desk's state in SQLite: restarts on a simulated clock resume every cadence exactly."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from broker.errors import DeliveryError
from broker.takedown.desk import TakedownDesk
from broker.takedown.desk_store import DESK_FILE, DeskStore
from broker.takedown.notices import Answer, Notice
from broker.takedown.trail import TrailItem, TrailWriter
from tests.support.takedown import DAY, HOUR, MINUTE, T0, SimClock, scripted_providers, synthetic_id

SECRET = b"test-secret-not-for-production"
ITEMS = 40
#: (when, item index) the provider answers REMOVED by API; the rest stay silent.
ANSWERS = {T0 + 30 * HOUR: 3, T0 + 50 * HOUR: 7, T0 + 80 * HOUR: 11}


class Recorder:
    """A sender that keeps what it sends; fails while ``down``."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str, str, int, tuple[str, ...]]] = []
        self.down = False
        self.clock: SimClock | None = None

    def send(self, notice: Notice) -> None:
        if self.down:
            raise DeliveryError("the SMTP server is down")
        assert self.clock is not None
        ids = tuple(sorted(i.item_id for i in notice.items))
        self.sent.append((self.clock.now, notice.provider_id, notice.kind, notice.repeat, ids))


def _items() -> list[tuple[TrailItem, str, int]]:
    directory, _ = scripted_providers(4)
    out = []
    for k in range(ITEMS):
        provider = f"host-{k % 4:02d}"
        item = TrailItem(
            synthetic_id(f"sref-{k // 4}"),
            f"case-{k // 4}",
            synthetic_id(f"sitem-{k}"),
            provider,
            directory.get(provider).country,
        )
        out.append((item, f"https://files-{k}.example.org/x", T0 + k * 17 * MINUTE))
    return out


def _drive(tmp: Path | None, restarts: set[int], down: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """Minute by minute for 5 days; a fresh desk (same file) at each minute of ``restarts``."""
    directory, _ = scripted_providers(4)
    clock, sender = SimClock(), Recorder()
    events: list[dict[str, Any]] = []
    sender.clock = clock

    def desk() -> TakedownDesk:
        store = DeskStore(tmp / DESK_FILE) if tmp is not None else None
        trail = TrailWriter(events.append, "hl-a", clock)
        return TakedownDesk(
            trail,
            directory,
            sender,
            secret=SECRET,
            sender_address="desk@hl-a.invalid",
            notifier="hl-a",
            store=store,
        )

    current, plan = desk(), _items()
    end = T0 + 5 * DAY
    while clock.now <= end:
        if clock.now in restarts:
            assert current.store is not None
            current.store.close()
            current = desk()
        for item, url, at in plan:
            if at == clock.now:
                current.open(item, url, at_ms=at)
            if at + 5 * MINUTE == clock.now:
                current.police_informed(item.item_id, "police-nl")
        if clock.now in ANSWERS:
            current.answer(plan[ANSWERS[clock.now]][0].item_id, Answer.REMOVED)
        sender.down = down[0] <= clock.now < down[1]
        current.tick()
        clock.now += MINUTE
    return {"sent": sender.sent, "events": [e["event_id"] for e in events], "desk": current}


def test_restarts_resume_every_cadence_exactly(tmp_path: Path) -> None:
    """Restarts before, at and after cadence steps: the same notices, at the same minutes."""
    reference = _drive(None, set())
    restarts = {
        T0 + 3 * MINUTE,  # between an item's opening and its police step
        T0 + 6 * MINUTE,  # the minute the first item is due
        T0 + DAY + 5 * MINUTE,  # the first repeat's minute
        T0 + DAY + 6 * MINUTE,
        T0 + 2 * DAY,
        T0 + 3 * DAY + 5 * MINUTE,  # the first escalation's minute
        T0 + 4 * DAY,
    }
    resumed = _drive(tmp_path, restarts)
    assert resumed["sent"] == reference["sent"]
    assert resumed["events"] == reference["events"]
    # no item notified twice within one cadence step, none missing a step
    per_step: dict[tuple[str, int], int] = {}
    for _, _, kind, repeat, ids in resumed["sent"]:
        for item_id in ids:
            key = (item_id, -1 if kind == "escalation" else repeat)
            per_step[key] = per_step.get(key, 0) + 1
    assert set(per_step.values()) == {1}
    silent = ITEMS - len(ANSWERS)
    assert sum(1 for (_, step) in per_step if step == 0) == ITEMS
    assert sum(1 for (_, step) in per_step if step == 2) >= silent - 1
    desk = resumed["desk"]
    assert sum(1 for s in desk.items() if s.escalated) >= silent - 1
    mode = stat.S_IMODE((tmp_path / DESK_FILE).stat().st_mode)
    assert mode == 0o600


def test_a_send_failed_before_a_restart_is_sent_after_it(tmp_path: Path) -> None:
    """The SMTP server down across a restart: the due notices go out once it is back, once."""
    down = (T0, T0 + 20 * HOUR)
    resumed = _drive(tmp_path, {T0 + 10 * HOUR}, down=down)
    first = [s for s in resumed["sent"] if s[2] == "notice" and s[3] == 0]
    assert {s[0] for s in first} == {down[1]}
    notified = [i for s in first for i in s[4]]
    assert sorted(notified) == sorted(item.item_id for item, _, _ in _items())
