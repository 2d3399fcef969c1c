"""Errors that reach logs and dead-letter headers never carry residents' details."""

from __future__ import annotations

from aiosmtplib import SMTPDataError, SMTPRecipientRefused, SMTPRecipientsRefused
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError

from civicflow.consumer import describe_error


def test_an_smtp_refusal_is_described_by_its_code_not_the_address() -> None:
    refused = SMTPRecipientsRefused([SMTPRecipientRefused(450, "4.2.2 Mailbox full", "jane.doe@example.org")])
    assert "jane.doe" not in describe_error(refused)
    data_error = SMTPDataError(554, "rejected: message to jane.doe@example.org about 12 Elm St")
    described = describe_error(data_error)
    assert "554" in described and "jane.doe" not in described and "Elm" not in described


def test_a_database_error_is_described_without_the_statement_or_its_values() -> None:
    error = IntegrityError("INSERT INTO x VALUES ($1)", {"email": "jane.doe@example.org"}, Exception("duplicate"))
    described = describe_error(error)
    assert described.startswith("IntegrityError") and "jane.doe" not in described and "INSERT" not in described


def test_a_validation_error_names_fields_not_values() -> None:
    class Contact(BaseModel):
        phone: int

    try:
        Contact.model_validate({"phone": "call 555-0100 after six"})
    except ValidationError as exc:
        described = describe_error(exc)
    assert described.startswith("ValidationError: phone:") and "555" not in described
