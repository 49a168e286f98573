"""Tables of the orchestrator's store (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Migrations under ``orchestrator/store/migrations`` create and evolve these tables; this
module is what queries are written against.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC instants on every backend (SQLite keeps no offset of its own)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware UTC instant")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

gateways = sa.Table(
    "gateways",
    metadata,
    sa.Column("gateway_id", sa.String(64), primary_key=True),
    sa.Column("serial", sa.String(128), nullable=False),
    sa.Column("commune", sa.String(128), nullable=False),
    sa.Column("latitude", sa.Float, nullable=False),
    sa.Column("longitude", sa.Float, nullable=False),
    sa.Column("time_zone", sa.String(64), nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("enrolled_at", UTCDateTime()),
    sa.Column("firmware_version", sa.String(64), nullable=False, server_default=""),
    sa.Column("last_seen", UTCDateTime()),
    # Highest event sequence the gateway said it has recorded (from its hello).
    sa.Column("reported_sequence", sa.BigInteger, nullable=False, server_default="0"),
)

enrollment_tokens = sa.Table(
    "enrollment_tokens",
    metadata,
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("gateway_id", sa.String(64), sa.ForeignKey("gateways.gateway_id"), nullable=False),
    sa.Column("serial", sa.String(128), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("used_at", UTCDateTime()),
    # What the token was spent on: an enrollment cut before the gateway got its answer is
    # retried with the same token and key, and gets this certificate again.
    sa.Column("certificate_serial", sa.String(64)),
    sa.Column("certificate_pem", sa.LargeBinary()),
)

certificates = sa.Table(
    "certificates",
    metadata,
    sa.Column("serial_hex", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("name", sa.String(64), nullable=False, index=True),
    sa.Column("not_before", UTCDateTime(), nullable=False),
    sa.Column("not_after", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime()),
    sa.Column("revocation_reason", sa.String(256)),
)

operators = sa.Table(
    "operators",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    # Communes the operator may act on; ["*"] for all.
    sa.Column("communes", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("disabled_at", UTCDateTime()),
)

desired_documents = sa.Table(
    "desired_documents",
    metadata,
    sa.Column("gateway_id", sa.String(64), sa.ForeignKey("gateways.gateway_id"), primary_key=True),
    sa.Column("kind", sa.Integer, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("digest", sa.LargeBinary, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("issued_at", UTCDateTime(), nullable=False),
    sa.Column("issued_by", sa.String(64), nullable=False),
)

held_documents = sa.Table(
    "held_documents",
    metadata,
    sa.Column("gateway_id", sa.String(64), sa.ForeignKey("gateways.gateway_id"), primary_key=True),
    sa.Column("kind", sa.Integer, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("digest", sa.LargeBinary, nullable=False),
    sa.Column("reported_at", UTCDateTime(), nullable=False),
)

# Current state of a gateway's devices, kept as a log of state reports: each report is
# stored as received (one row, no per-device work on the hot path) and every few reports
# the log is compacted into a snapshot holding the latest state of each device. Protobuf
# concatenation is merge, so snapshot + later reports, parsed as one StateReport and
# deduplicated by device id (last wins), is the current state.
gateway_devices = sa.Table(
    "gateway_devices",
    metadata,
    sa.Column("gateway_id", sa.String(64), sa.ForeignKey("gateways.gateway_id"), primary_key=True),
    # Serialized StateReport: the compacted snapshot.
    sa.Column("payload", sa.LargeBinary, nullable=False),
    # Reports up to this sequence are folded into the snapshot.
    sa.Column("through_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("device_updates", sa.BigInteger, nullable=False, server_default="0"),
)

device_reports = sa.Table(
    "device_reports",
    metadata,
    sa.Column("gateway_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("gateway_id", sa.String(64), primary_key=True),
    sa.Column("sequence", sa.BigInteger, primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("device_id", sa.String(128), nullable=False),
    sa.Column("type", sa.String(128), nullable=False, index=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    # A copy recorded again by an agent whose storage went back: the number the event was
    # first recorded under (link.proto Event.first_sequence); NULL for the rest.
    sa.Column("first_sequence", sa.BigInteger, nullable=True),
    # The sequence under which the same event was stored first: this row is kept for the
    # accounting (every sequence stored or listed lost) and is not news.
    sa.Column("copy_of", sa.BigInteger, nullable=True),
    sa.Index(
        "ix_events_first_sequence",
        "gateway_id",
        "first_sequence",
        sqlite_where=sa.text("first_sequence IS NOT NULL"),
        postgresql_where=sa.text("first_sequence IS NOT NULL"),
    ),
)

commands = sa.Table(
    "commands",
    metadata,
    sa.Column("command_id", sa.String(64), primary_key=True),
    sa.Column("gateway_id", sa.String(64), sa.ForeignKey("gateways.gateway_id"), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("detail", sa.String(1024), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_commands_gateway_status", "gateway_id", "status"),
)

# The GatewayLink stream each gateway holds, and on which replica: the fleet view of every
# replica reads "connected" from here. A replica refreshes ``seen_at`` of its streams every
# few seconds; a row not refreshed for a lease (a replica killed, or cut off from the store)
# no longer counts. A newer stream of a gateway replaces the row, wherever it opened.
gateway_streams = sa.Table(
    "gateway_streams",
    metadata,
    sa.Column("gateway_id", sa.String(64), sa.ForeignKey("gateways.gateway_id"), primary_key=True),
    sa.Column("replica", sa.String(64), nullable=False),
    sa.Column("stream", sa.String(32), nullable=False),
    sa.Column("opened_at", UTCDateTime(), nullable=False),
    sa.Column("seen_at", UTCDateTime(), nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False, index=True),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(256), nullable=False),
    sa.Column("commune", sa.String(128), nullable=False, server_default=""),
    sa.Column("result", sa.String(32), nullable=False),
    sa.Column("detail", sa.String(2048), nullable=False, server_default=""),
)

# -- firmware: releases and campaigns (issue 6) ----------------------------------------------

# An agent release as uploaded: the signed manifest is stored byte for byte (agents verify
# exactly those bytes), each part's bytes in fixed-size chunks so any replica serves any
# offset without a shared filesystem.
releases = sa.Table(
    "releases",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("manifest", sa.LargeBinary, nullable=False),
    # [{"key_id": ..., "signature": base64}, ...]
    sa.Column("signatures", sa.JSON, nullable=False),
    sa.Column("total_size", sa.BigInteger, nullable=False),
    sa.Column("min_orchestrator_version", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("uploaded_at", UTCDateTime(), nullable=False),
    sa.Column("uploaded_by", sa.String(128), nullable=False),
)

release_parts = sa.Table(
    "release_parts",
    metadata,
    sa.Column("version", sa.String(64), sa.ForeignKey("releases.version"), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
)

release_chunks = sa.Table(
    "release_chunks",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("part", sa.String(200), primary_key=True),
    sa.Column("chunk", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.ForeignKeyConstraint(["version", "part"], ["release_parts.version", "release_parts.name"]),
)

# A campaign: its plan (the resolved target included) as the pure core takes it, and where
# the rollout stands. ``revision`` guards against two replicas deciding at once.
campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("campaign_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("backend", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("wave", sa.Integer, nullable=False),
    sa.Column("plan", sa.JSON, nullable=False),
    # allow_downgrade, balena release and devices.
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("acknowledged", sa.JSON, nullable=False),
    sa.Column("history", sa.JSON, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Each target gateway of a campaign: its wave, when it was offered the release, and the
# latest progress it reported (stage is a FirmwareStage; 0: nothing reported yet).
campaign_gateways = sa.Table(
    "campaign_gateways",
    metadata,
    sa.Column(
        "campaign_id", sa.String(64), sa.ForeignKey("campaigns.campaign_id"), primary_key=True
    ),
    sa.Column("gateway_id", sa.String(64), primary_key=True, index=True),
    sa.Column("wave", sa.Integer, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("commune", sa.String(128), nullable=False),
    sa.Column("offered_at", UTCDateTime()),
    sa.Column("stage", sa.Integer, nullable=False, server_default="0"),
    sa.Column("detail", sa.String(1024), nullable=False, server_default=""),
    sa.Column("bytes_done", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("running_version", sa.String(64), nullable=False, server_default=""),
    sa.Column("reported_at", UTCDateTime()),
)

# -- alarms, energy and crisis playbooks (issue 12) -------------------------------------------

# An alarm as a state (domain/alarms.py): one open row per (gateway, device, type); a closed
# row is history. ``root_id`` groups a lamp's alarm under its cabinet's mains loss or its
# gateway's silence (flood control). ``updated_at`` drives the watch feed on every replica.
alarms = sa.Table(
    "alarms",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("gateway_id", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(128), nullable=False),
    sa.Column("type", sa.String(128), nullable=False),
    sa.Column("commune", sa.String(128), nullable=False),
    sa.Column("severity", sa.Integer, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("acknowledged", sa.Boolean, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("first_at", UTCDateTime(), nullable=False),
    sa.Column("last_at", UTCDateTime(), nullable=False),
    sa.Column("message", sa.String(1024), nullable=False, server_default=""),
    sa.Column("cleared_at", UTCDateTime()),
    sa.Column("acknowledged_at", UTCDateTime()),
    sa.Column("acknowledged_by", sa.String(128), nullable=False, server_default=""),
    sa.Column("comment", sa.String(1024), nullable=False, server_default=""),
    sa.Column("shelved_until", UTCDateTime()),
    sa.Column("assigned_to", sa.String(128), nullable=False, server_default=""),
    sa.Column("closed_at", UTCDateTime()),
    sa.Column("closed_by", sa.String(128), nullable=False, server_default=""),
    sa.Column("repair_note", sa.String(1024), nullable=False, server_default=""),
    sa.Column("reminded_at", UTCDateTime()),
    sa.Column("reminders", sa.Integer, nullable=False, server_default="0"),
    sa.Column("root_id", sa.BigInteger, nullable=True, index=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False, index=True),
    sa.Index(
        "ux_alarms_open",
        "gateway_id",
        "device_id",
        "type",
        unique=True,
        sqlite_where=sa.text("closed_at IS NULL"),
        postgresql_where=sa.text("closed_at IS NULL"),
    ),
    sa.Index("ix_alarms_commune_closed", "commune", "closed_at"),
)

# Energy per lamp per local day, folded from the agents' quarter-hour metering at ingest
# (domain/energy.py): ``day_wh`` is what burned while the sun was up, ``night_*`` what the
# lamp did between dusk and dawn, ``profile`` the Wh of each local hour (24 numbers).
energy_days = sa.Table(
    "energy_days",
    metadata,
    sa.Column("gateway_id", sa.String(64), primary_key=True),
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("commune", sa.String(128), nullable=False),
    sa.Column("wh", sa.Float, nullable=False),
    sa.Column("on_seconds", sa.Float, nullable=False),
    sa.Column("covered_seconds", sa.Float, nullable=False),
    sa.Column("day_wh", sa.Float, nullable=False),
    sa.Column("night_seconds", sa.Float, nullable=False),
    sa.Column("night_on_seconds", sa.Float, nullable=False),
    sa.Column("peak_w", sa.Float, nullable=False),
    sa.Column("profile", sa.JSON, nullable=False),
    # The profile again, one column per local hour, so that reports sum it in SQL.
    *(sa.Column(f"h{h:02d}", sa.Float, nullable=False, server_default="0") for h in range(24)),
    sa.Index("ix_energy_days_commune_day", "commune", "day"),
)

# A crisis playbook, versioned: a new version is a new row; runs name the version they ran.
playbooks = sa.Table(
    "playbooks",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
)

playbook_runs = sa.Table(
    "playbook_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    # awaiting_confirmation, running, ended, expired
    sa.Column("status", sa.String(32), nullable=False, index=True),
    sa.Column("requested_by", sa.String(128), nullable=False),
    sa.Column("confirmed_by", sa.String(128), nullable=False, server_default=""),
    sa.Column("requested_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime()),
    sa.Column("ends_at", UTCDateTime()),
    sa.Column("ended_at", UTCDateTime()),
    sa.Column("ended_by", sa.String(128), nullable=False, server_default=""),
    # The gateways and devices each action resolved to, and the commands sent.
    sa.Column("steps", sa.JSON, nullable=False),
)

# Citizens' reports (orchestrator.public): what was reported, where (4 decimals, ~10 m),
# what it was matched to and the alarm that carries it. Nothing about the reporter: no
# address, no name, no free text. Deleted after the retention period (domain/opendata).
public_reports = sa.Table(
    "public_reports",
    metadata,
    sa.Column("reference", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("detail", sa.String(32), nullable=False, server_default=""),
    sa.Column("latitude", sa.Float, nullable=False),
    sa.Column("longitude", sa.Float, nullable=False),
    sa.Column("commune", sa.String(128), nullable=False),
    sa.Column("asset_id", sa.String(64), nullable=False),
    sa.Column("gateway_id", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(128), nullable=False),
    sa.Column("distance_m", sa.Float, nullable=False),
    sa.Column("alarm_id", sa.BigInteger, nullable=True),
    # SHA-256 of the proof-of-work challenge: a challenge serves once, on any replica.
    sa.Column("challenge_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("reported_at", UTCDateTime(), nullable=False, index=True),
)

# -- the city (issue 12): asset register and group documents ------------------------------

# Every lamp, cabinet, crossing and bollard site, tied to the device its agent reports
# (gateway_id, device_id). Kind-specific fields (the décret's lamp fields, a cabinet's tags)
# are in ``attributes``.
assets = sa.Table(
    "assets",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("asset_id", sa.String(64), primary_key=True),
    sa.Column("gateway_id", sa.String(64), nullable=False, index=True),
    sa.Column("device_id", sa.String(128), nullable=False),
    sa.Column("commune", sa.String(128), nullable=False, index=True),
    sa.Column("latitude", sa.Float, nullable=False),
    sa.Column("longitude", sa.Float, nullable=False),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# A desired-state document assigned to a target (city, commune, tag, list, area); one per
# (kind, target). ``sequence`` orders assignments of the same level (the last put wins).
group_documents = sa.Table(
    "group_documents",
    metadata,
    sa.Column("assignment_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.Integer, nullable=False),
    sa.Column("target_key", sa.String(160), nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("target", sa.JSON, nullable=False),
    sa.Column("sequence", sa.BigInteger, nullable=False),
    sa.Column("digest", sa.LargeBinary, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("issued_at", UTCDateTime(), nullable=False),
    sa.Column("issued_by", sa.String(64), nullable=False),
    sa.UniqueConstraint("kind", "target_key", name="uq_group_documents_target"),
)

# Where each gateway's desired document comes from: the group document that wrote
# ``version``. A desired document at another version was put on the gateway itself.
document_sources = sa.Table(
    "document_sources",
    metadata,
    sa.Column("gateway_id", sa.String(64), sa.ForeignKey("gateways.gateway_id"), primary_key=True),
    sa.Column("kind", sa.Integer, primary_key=True),
    sa.Column("assignment_id", sa.Integer, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

# The last document each gateway refused, and why (the agent's words, escaped when shown).
document_refusals = sa.Table(
    "document_refusals",
    metadata,
    sa.Column("gateway_id", sa.String(64), sa.ForeignKey("gateways.gateway_id"), primary_key=True),
    sa.Column("kind", sa.Integer, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("error", sa.String(1024), nullable=False),
    sa.Column("refused_at", UTCDateTime(), nullable=False),
)

# The web console's sign-in (issue 14): an operator's password hash and TOTP secret, and
# the open sessions (kept here, not in a replica's memory: any replica serves any browser).
console_accounts = sa.Table(
    "console_accounts",
    metadata,
    sa.Column("name", sa.String(64), sa.ForeignKey("operators.name"), primary_key=True),
    sa.Column("password_hash", sa.String(256), nullable=False),
    sa.Column("totp_secret", sa.String(64), nullable=False),
    # The last TOTP step used: a code is never accepted twice, on any replica.
    sa.Column("totp_last_step", sa.BigInteger, nullable=False, default=0),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

console_sessions = sa.Table(
    "console_sessions",
    metadata,
    # SHA-256 of the cookie's value: a copy of the store gives no session away.
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("operator", sa.String(64), nullable=False, index=True),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("certificate_serial", sa.String(64), nullable=False, default=""),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
)
