"""`meter-bridge duke login`: walk a user through getting the refresh token the `duke_energy` source needs.

aiodukeenergy 1.x signs in the way Duke's app does: Auth0's authorization code flow with PKCE
against `login.duke-energy.com` (its `Auth0Client`), because Duke's login page has a CAPTCHA
and no password grant. So a person has to log in in a browser once:

1. `Auth0Client.get_authorization_url()` makes the PKCE verifier, state and the `/authorize`
   address (scope `offline_access`, so a refresh token is issued); we print it;
2. the user opens it, logs in, and the browser is sent to the app's redirect address
   (`https://login.duke-energy.com/ios/.../callback?code=...&state=...`); the user pastes that
   address (or just the code) back;
3. `Auth0Client.exchange_code(code, verifier)` trades it at `/oauth/token` for tokens; the
   refresh token is saved where the source looks first (`token_file`, 0600) and printed for the
   `DUKE_REFRESH_TOKEN` variable.

Errors are mapped here: a refused exchange (`DukeEnergyAuthError`) or an address from another
attempt -> `AuthError`; network failures -> `SourceConnectionError`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp

from ..errors import AuthError, BridgeError, SourceConnectionError

#: Where the `duke_energy` source keeps its rotated refresh token by default (its `token_file`).
DEFAULT_TOKEN_FILE = Path("/data/duke_energy/token.json")

INSTRUCTIONS = """Duke Energy login (once; the bridge then renews the token itself).

1. Open this address in a browser and log in with your Duke Energy account:

{url}

2. After the login the browser is sent to an address starting with
   https://login.duke-energy.com/ios/ ... that contains `code=`. The page itself may show
   nothing useful: copy the whole address from the address bar (or, if it moves on, from the
   browser's developer tools, Network tab with "Preserve log", the request with `callback?code=`).
   The code is valid for a few minutes only.
"""


@dataclass(frozen=True, slots=True)
class DukeLogin:
    """What a finished login gives: the refresh token, and where it was saved (if anywhere)."""

    refresh_token: str
    saved_to: Path | None


def code_from_answer(answer: str, state: str) -> str:
    """The authorization code from a pasted redirect address (or a bare code).

    Raises `AuthError` when the address carries an Auth0 error or comes from another attempt.
    """
    answer = answer.strip()
    if not answer:
        raise AuthError("nothing was pasted")
    if "?" not in answer and "=" not in answer:
        return answer  # the bare code
    query = parse_qs(urlsplit(answer).query)
    if "error" in query:
        description = query.get("error_description", [""])[0]
        raise AuthError(f"Duke Energy's login answered {query['error'][0]}: {description}".rstrip(": "))
    codes = query.get("code")
    if not codes:
        raise AuthError("the address has no `code=`: copy the address the login ended at")
    returned = query.get("state", [None])[0]
    # aiodukeenergy puts the (base64) state into the URL unencoded, so a `+` in it comes back
    # as a space: both spellings are this attempt's
    if returned is not None and returned not in (state, state.replace("+", " ")):
        raise AuthError("this address belongs to another login attempt: start again and use its address")
    return codes[0]


def save_refresh_token(token_file: Path, refresh_token: str) -> None:
    """Write `{"refresh_token": ...}` to `token_file`, mode 0600 (the source's own format)."""
    token_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"refresh_token": refresh_token}, out)
    os.chmod(token_file, 0o600)


async def login(
    session: aiohttp.ClientSession,
    ask: Callable[[str], Awaitable[str]],
    token_file: Path | None = None,
) -> DukeLogin:
    """Run the login: show the address through `ask`, read back the redirect, exchange the code.

    `ask(text)` shows `text` and returns what the user typed; `session` is the one the library's
    Auth0 client talks through. Raises `AuthError`, `SourceConnectionError`.
    """
    from aiodukeenergy import Auth0Client, DukeEnergyAuthError

    auth0 = Auth0Client(session)
    url, state, verifier = auth0.get_authorization_url()
    answer = await ask(INSTRUCTIONS.format(url=url) + "\nPaste the address here and press Enter: ")
    code = code_from_answer(answer, state)
    try:
        tokens = await auth0.exchange_code(code, verifier)
    except DukeEnergyAuthError as err:
        raise AuthError(f"Duke Energy refused the login code (expired or used?): {err}") from err
    except (aiohttp.ClientError, OSError, TimeoutError) as err:
        raise SourceConnectionError(f"login.duke-energy.com: {err}") from err
    refresh_token = tokens.get("refresh_token") if isinstance(tokens, dict) else None
    if not refresh_token:
        raise AuthError("Duke Energy issued no refresh token (was `offline_access` granted?)")
    if token_file is not None:
        save_refresh_token(token_file, str(refresh_token))
    return DukeLogin(str(refresh_token), token_file)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `meter-bridge duke login`."""
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help=f"also save the token where the source reads it first (its token_file, e.g. {DEFAULT_TOKEN_FILE})",
    )


async def _ask_stdin(text: str) -> str:
    print(text, end="", file=sys.stderr, flush=True)
    return await asyncio.to_thread(sys.stdin.readline)


def run_login(args: argparse.Namespace) -> int:
    """`meter-bridge duke login`: the token on stdout (instructions on stderr); 0 ok, 1 refused."""

    async def run() -> DukeLogin:
        async with aiohttp.ClientSession() as session:
            return await login(session, _ask_stdin, args.token_file)

    try:
        result = asyncio.run(run())
    except BridgeError as err:
        print(f"login failed: {err}", file=sys.stderr)
        return 1
    saved = f" and saved to {result.saved_to}" if result.saved_to else ""
    print(
        f"\nGot a refresh token{saved}. Set it as DUKE_REFRESH_TOKEN, a service variable of meter-bridge (used by "
        '`refresh_token: "${DUKE_REFRESH_TOKEN}"` in the duke_energy source); the bridge keeps the '
        "renewed one in the source's token_file. The token is:",
        file=sys.stderr,
    )
    print(result.refresh_token)
    return 0
