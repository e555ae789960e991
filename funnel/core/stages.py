"""Which stage moves the funnel allows: forward along the marketer's order, into the exit
before a lead has paid, and back in from the exit when a lead re-qualifies."""

from __future__ import annotations

from funnel.script.schema import Script


def is_exit(script: Script, stage: str) -> bool:
    return stage not in script.funnel_order


def can_move(script: Script, current: str, target: str) -> bool:
    if target == current:
        return False
    if is_exit(script, current):
        return True
    order = script.funnel_order
    if is_exit(script, target):
        # A customer who later answers "not a fit" stays a customer: revenue is history.
        return order.index(current) < order.index(script.roles.customer)
    return order.index(target) > order.index(current)


def index_of(script: Script, stage: str) -> int:
    """Position along the funnel; exits sort after every funnel stage."""
    order = script.funnel_order
    return order.index(stage) if stage in order else len(order)
