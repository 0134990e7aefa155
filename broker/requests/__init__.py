"""Police-to-police requests for information on the clock (EU Directive 2023/977).

A point of contact asks another country's for information (``REQUEST``) and is
answered (``ANSWER``), refused on an Art. 6 ground (``REFUSAL``), asked to clarify
(``CLARIFICATION_ASKED`` / ``_GIVEN``: the clock pauses) or told of a delay
(``DELAY``). Messages are signed and sealed (:mod:`broker.requests.wire`), routed
SPOC to SPOC (:mod:`broker.requests.router`), kept with their clocks in each
SPOC's own desk (:mod:`broker.requests.desk`), watched for overdue answers
(:mod:`broker.requests.clock`) and counted for Art. 18 from the ledger
(:mod:`broker.requests.stats`).
"""
