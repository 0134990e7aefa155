"""The web console: a police liaison's inbox and referrals, the operator's network view."""

from console.app import Console, build_app
from console.auth import Principal, Sessions, Tokens, token_env

__all__ = ["Console", "Principal", "Sessions", "Tokens", "build_app", "token_env"]
