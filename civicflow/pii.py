"""Residents' contact details, sealed per case: readable only with the case's key, forgotten with it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from uuid import UUID

from cryptography.fernet import Fernet, InvalidToken
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


def _mail_address(value: str) -> str:
    """A valid address in the form a plain SMTP server takes: an internationalised domain in its ASCII
    (IDNA) form. pydantic's EmailStr would turn `a@xn--exmple-cua.org` back into `a@exämple.org`, which
    a server without SMTPUTF8 refuses; a mailbox that is not ASCII stays as it is (it cannot be written
    in ASCII) and the notifier records it as undeliverable."""
    try:
        parts = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None
    return str(parts.ascii_email or parts.normalized)


MailAddress = Annotated[str, AfterValidator(_mail_address)]


class ResidentContact(BaseModel):
    """How to reach the person who reported a case. Personal data: never logged, never in public views."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None
    email: MailAddress | None = None
    phone: str | None = None


def load_master_key(configured: str, state_dir: Path) -> bytes:
    """The configured key, or one kept in the state folder (created once, readable only by its owner)."""
    if configured:
        return configured.encode()
    path = state_dir / "pii-master.key"
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        key = Fernet.generate_key()
        handle.write(key)
    return key


class ContactVault:
    """Seals a contact with a fresh per-case key stored (wrapped) in events.case_keys."""

    def __init__(self, master_key: bytes) -> None:
        self._master = Fernet(master_key)

    async def seal(self, tx: AsyncConnection, case_id: UUID, contact: ResidentContact) -> str:
        case_key = Fernet.generate_key()
        await tx.execute(
            text("INSERT INTO events.case_keys (case_id, wrapped_key) VALUES (:c, :k)"),
            {"c": case_id, "k": self._master.encrypt(case_key)},
        )
        return Fernet(case_key).encrypt(contact.model_dump_json().encode()).decode()

    async def unseal(self, tx: AsyncConnection, case_id: UUID, sealed: str) -> ResidentContact | None:
        """The contact, or None when the resident's key has been forgotten."""
        wrapped = (
            await tx.execute(text("SELECT wrapped_key FROM events.case_keys WHERE case_id = :c"), {"c": case_id})
        ).scalar_one_or_none()
        if wrapped is None:
            return None
        try:
            case_key = self._master.decrypt(bytes(wrapped))
            return ResidentContact.model_validate_json(Fernet(case_key).decrypt(sealed.encode()))
        except InvalidToken as exc:
            raise RuntimeError(f"case {case_id}: contact key does not open the sealed contact") from exc

    async def forget(self, tx: AsyncConnection, case_id: UUID) -> bool:
        result = await tx.execute(text("DELETE FROM events.case_keys WHERE case_id = :c"), {"c": case_id})
        return bool(result.rowcount)
