"""Hand-off to people: the managers' card, the notifications outbox, the CRM's payload,
and payments."""
