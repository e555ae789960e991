"""What to do with a due touch right before sending it: send, cancel (and why) or postpone
(quiet hours, frequency cap). Pure: the lead, the script and the clock decide."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from funnel.core.models import Lead, Touch
from funnel.experiments.assignment import in_holdout
from funnel.followups.sending_rules import in_window, send_allowed_at
from funnel.script.schema import CampaignStep, Script

CancelReason = Literal[
    "forgotten",
    "blocked",
    "opted_out",
    "campaign_removed",
    "stage_changed",
    "replied",
    "not_eligible",
    "manager_owns",
]

# While a manager holds the lead (the managers' loop, funnel/handoff/ownership.py) these
# campaigns stay silent; the release starts a new cycle that plans them again.
PAUSED_BY_MANAGER = frozenset({"nurture", "winback"})


@dataclass(frozen=True)
class Send:
    pass


@dataclass(frozen=True)
class Cancel:
    reason: CancelReason


@dataclass(frozen=True)
class Postpone:
    until: datetime
    why: Literal["quiet_hours", "frequency_cap"]


@dataclass(frozen=True)
class HoldOut:
    """The lead is in the campaign's holdout: the touch is due and would go out now, but is
    only recorded (status held_out), so /campaigns can compare with those messaged."""


Decision = Send | Cancel | Postpone | HoldOut


def campaign_step(script: Script, campaign_id: str, step: int) -> CampaignStep | None:
    campaign = script.campaign(campaign_id)
    if campaign is None or not 1 <= step <= len(campaign.steps):
        return None
    return campaign.steps[step - 1]


def decide(
    touch: Touch,
    lead: Lead | None,
    script: Script,
    now: datetime,
    sent: Iterable[datetime],
    zone: ZoneInfo,
) -> Decision:
    """What to do with a due touch right before sending it.

    `sent` are the times of the lead's recent sends that count against the frequency cap
    (including the ones already chosen in this round).
    """
    if lead is None or lead.deleted_at is not None or lead.chat_id is None:
        return Cancel("forgotten")
    if lead.blocked_at is not None:
        return Cancel("blocked")
    if lead.opted_out_at is not None:
        return Cancel("opted_out")
    campaign = script.campaign(touch.campaign)
    if campaign is None or campaign_step(script, touch.campaign, touch.step) is None:
        return Cancel("campaign_removed")
    if lead.stage not in campaign.stages:
        return Cancel("stage_changed")
    if lead.cycle != touch.cycle:
        return Cancel("replied")
    if (campaign.exit_reasons and lead.exit_reason not in campaign.exit_reasons) or (
        campaign.temperatures and lead.temperature not in campaign.temperatures
    ):
        return Cancel("not_eligible")
    if lead.is_test and lead.time_scale:
        # A test run compresses days into seconds: the window and the cap would stall it.
        return Send()
    if lead.manager_id is not None and campaign.kind in PAUSED_BY_MANAGER:
        return Cancel("manager_owns")
    history = list(sent)
    allowed = send_allowed_at(now, history, script.send_window, script.frequency_cap, zone)
    if allowed <= now:
        # Decided at the very moment a send would happen, so both groups pass every rule.
        return HoldOut() if in_holdout(campaign, lead.id) else Send()
    why: Literal["quiet_hours", "frequency_cap"] = (
        "frequency_cap" if in_window(now, script.send_window, zone) else "quiet_hours"
    )
    return Postpone(allowed, why)
