"""The AWS control store: the reference's `etlConfiguration` table plus a ledger table.

The ledger table (pk `targetTableName`, sk `sk`) holds, per table, one item per committed
window (`window#<partitionKey>`), the lease (`lease`), the publish intent (`intent`) and the
commit sequence (`seq`). Keeping them beside the control item lets `commit_window` be a single
`TransactWriteItems`: DynamoDB then guarantees all-or-nothing, which is the crash rule.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from delta_platform.errors import LeaseHeld, StoreError, WatermarkConflict
from delta_platform.store.base import (
    KEY,
    PARTITION_KEY,
    SEQ,
    Lease,
    check_changes,
    check_item,
    entry_key,
    lease_held_message,
    mismatches,
    normalize,
    prepare_ledger_entry,
    sort_ledger,
    to_ms,
)

SK = "sk"
_THROTTLED = {
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "TransactionConflictException", "TransactionInProgressException", "InternalServerError",
}
_THROTTLED_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
_CONDITIONAL = frozenset({"ConditionalCheckFailedException", "TransactionCanceledException"})
_ser, _deser = TypeSerializer(), TypeDeserializer()


def _to_ddb(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in item.items()}


def _from_ddb(item: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if item is None else normalize({k: _deser.deserialize(v) for k, v in item.items()})


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


class _Expr:
    """Placeholders for one request: every attribute name and value goes through #n/:v."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def n(self, attr: str) -> str:
        self.names[key := f"#n{len(self.names)}"] = attr
        return key

    def v(self, value: Any) -> str:
        self.values[key := f":v{len(self.values)}"] = _ser.serialize(value)
        return key

    def expected(self, expected: dict[str, Any]) -> str:
        """The entry must exist, and each expected attribute equal (or, for None, be absent)."""
        parts = [f"attribute_exists({self.n(KEY)})"]
        for attr, want in expected.items():
            absent = f"attribute_not_exists({self.n(attr)})" if want is None else None
            parts.append(absent or f"{self.n(attr)} = {self.v(want)}")
        return " AND ".join(parts)

    def changes(self, changes: dict[str, Any]) -> str:
        sets = [f"{self.n(a)} = {self.v(v)}" for a, v in changes.items() if v is not None]
        removes = [self.n(a) for a, v in changes.items() if v is None]
        out = ["SET " + ", ".join(sets)] if sets else []
        return " ".join(out + (["REMOVE " + ", ".join(removes)] if removes else []))

    def lease_held(self, lease: Lease, now_ms: int) -> str:
        return (f"{self.n('leaseToken')} = {self.v(lease.token)} AND "
                f"{self.n('expiresAtMs')} > {self.v(now_ms)}")

    def args(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ExpressionAttributeNames": self.names}
        return {**out, "ExpressionAttributeValues": self.values} if self.values else out


class DynamoStore:
    """ControlStore on DynamoDB: conditional writes and one transaction per window commit."""

    def __init__(
        self,
        control_table: str = "etlConfiguration",
        ledger_table: str = "etlLedger",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: Any = None,
        session: boto3.session.Session | None = None,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 8,
        page_size: int | None = None,
        **client_kwargs: Any,
    ):
        self.control_table, self.ledger_table = control_table, ledger_table
        self.clock, self.max_attempts, self.page_size = clock, max_attempts, page_size
        if client is None:
            client_kwargs.setdefault("config", Config(retries={"mode": "standard"}))
            client = (session or boto3.session.Session()).client(
                "dynamodb", endpoint_url=endpoint_url, region_name=region_name, **client_kwargs
            )
        self.client = client

    def __repr__(self) -> str:
        return f"DynamoStore({self.control_table!r}, {self.ledger_table!r})"

    # ------------------------------------------------------------------ plumbing
    def _call(
        self, op: str, table: str | None = None, *, passthrough: frozenset[str] = _CONDITIONAL,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Call with bounded exponential backoff (full jitter) on throttling and transaction
        conflicts. Codes in `passthrough` reach the caller as ClientError; others: StoreError."""
        for attempt in range(self.max_attempts):
            try:
                return getattr(self.client, op)(**kwargs)
            except ClientError as exc:
                reasons = {r.get("Code") for r in exc.response.get("CancellationReasons", [])}
                throttled = _code(exc) in _THROTTLED or (
                    reasons & _THROTTLED_REASONS and reasons <= _THROTTLED_REASONS | {"None"}
                )
                if not throttled:
                    if _code(exc) in passthrough:
                        raise
                    raise StoreError(f"DynamoDB {op} failed: {exc}", table=table) from exc
            except BotoCoreError as exc:
                raise StoreError(f"DynamoDB {op} failed: {exc}", table=table) from exc
            if attempt + 1 < self.max_attempts:
                time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))
        raise StoreError(f"DynamoDB {op} throttled {self.max_attempts} times", table=table)

    def _lkey(self, table: str, sk: str) -> dict[str, Any]:
        return {KEY: {"S": table}, SK: {"S": sk}}

    def _get_l(self, table: str, sk: str) -> dict[str, Any] | None:
        resp = self._call("get_item", table, TableName=self.ledger_table,
                          Key=self._lkey(table, sk), ConsistentRead=True)
        return _from_ddb(resp.get("Item"))

    def _lease_check(self, lease: Lease) -> dict[str, Any]:
        e = _Expr()
        cond = e.lease_held(lease, to_ms(self.clock()))
        return {"ConditionCheck": {"TableName": self.ledger_table, **e.args(),
                                   "Key": self._lkey(lease.table, "lease"),
                                   "ConditionExpression": cond}}

    def _lease_lost(self, lease: Lease) -> LeaseHeld:
        holder = self._get_l(lease.table, "lease")
        if holder is None:
            why = "no lease is held"
        elif holder.get("leaseToken") == lease.token:
            why = "it expired"
        else:
            why = lease_held_message(holder.get("owner"), holder.get("expiresAtMs", 0))
        return LeaseHeld("lease lost: " + why, table=lease.table)

    def _transact(self, lease: Lease, items: list[dict[str, Any]]) -> list[str]:
        """Run a transaction whose first item is the lease check; [] on success, else each
        item's cancellation code. A failed lease check is always reported as LeaseHeld."""
        try:  # one token per request: a retried request that already succeeded is a no-op
            self._call("transact_write_items", lease.table, TransactItems=items,
                       ClientRequestToken=str(uuid.uuid4()))
            return []
        except ClientError as exc:
            codes = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
            if codes[:1] == ["ConditionalCheckFailed"]:
                raise self._lease_lost(lease) from exc
            if _code(exc) != "TransactionCanceledException" or not codes:
                raise StoreError(f"DynamoDB transaction failed: {exc}", table=lease.table) from exc
            return codes

    # ------------------------------------------------------------------ tables
    def init(self) -> None:
        """Create both tables (on-demand) if absent and wait until ACTIVE; idempotent."""
        for name, keys in ((self.control_table, [KEY]), (self.ledger_table, [KEY, SK])):
            schema = [{"AttributeName": k, "KeyType": t}
                      for k, t in zip(keys, ("HASH", "RANGE")[: len(keys)], strict=True)]
            try:
                desc = self._call("describe_table", TableName=name,
                                  passthrough=frozenset({"ResourceNotFoundException"}))["Table"]
            except ClientError:
                defs = [{"AttributeName": k, "AttributeType": "S"} for k in keys]
                with contextlib.suppress(ClientError):  # in use: someone else just created it
                    self._call("create_table", TableName=name, KeySchema=schema,
                               AttributeDefinitions=defs, BillingMode="PAY_PER_REQUEST",
                               passthrough=frozenset({"ResourceInUseException"}))
                desc = {"KeySchema": schema, "TableStatus": "CREATING"}
            if sorted(desc["KeySchema"], key=lambda k: k["KeyType"]) != schema:
                raise StoreError(f"DynamoDB table {name} exists with key {desc['KeySchema']}")
            if desc.get("TableStatus") != "ACTIVE":
                waiter = self.client.get_waiter("table_exists")
                waiter.wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 300})

    # ------------------------------------------------------------------ control items
    def put_entry(self, item: dict[str, Any]) -> None:
        name = entry_key(item)
        item = _to_ddb(check_item(item, table=name))
        self._call("put_item", name, TableName=self.control_table, Item=item)

    def get_entry(self, table: str) -> dict[str, Any] | None:
        resp = self._call("get_item", table, TableName=self.control_table,
                          Key={KEY: {"S": table}}, ConsistentRead=True)
        return _from_ddb(resp.get("Item"))

    def scan_entries(self) -> Iterator[dict[str, Any]]:
        """Every item: DynamoDB stops each page at 1 MB, so follow LastEvaluatedKey."""
        kwargs: dict[str, Any] = {"TableName": self.control_table, "ConsistentRead": True}
        if self.page_size:
            kwargs["Limit"] = self.page_size
        while True:
            resp = self._call("scan", **kwargs)
            yield from (_from_ddb(item) for item in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def update_entry(
        self, table: str, changes: dict[str, Any], *, expected: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        changes, expected = check_changes(table, changes), expected or {}
        if changes:
            e = _Expr()
            cond = e.expected(expected)
            with contextlib.suppress(ClientError):
                resp = self._call(
                    "update_item", table, TableName=self.control_table, Key={KEY: {"S": table}},
                    UpdateExpression=e.changes(changes), ConditionExpression=cond,
                    ReturnValues="ALL_NEW", **e.args())
                return _from_ddb(resp["Attributes"]) or {}
        item = self.get_entry(table)  # no write, or the write's condition failed: say why
        if item is None:
            raise StoreError("no control entry to update", table=table)
        problems = mismatches(item, expected)
        if changes and not problems:  # the write failed yet the entry matches now: a race
            problems = ["the entry changed meanwhile"]
        if problems:
            raise WatermarkConflict("condition failed: " + "; ".join(problems), table=table)
        return item

    def delete_entry(self, table: str) -> None:
        self._call("delete_item", table, TableName=self.control_table, Key={KEY: {"S": table}})

    # ------------------------------------------------------------------ leases and intents
    def acquire_lease(self, table: str, owner: str, ttl_seconds: float) -> Lease:
        token = uuid.uuid4().hex
        for _ in range(3):  # a holder gone between our write and our read: try again
            now = self.clock()
            item = {KEY: table, SK: "lease", "owner": owner, "leaseToken": token,
                    "expiresAtMs": to_ms(now + ttl_seconds)}
            e = _Expr()
            cond = f"attribute_not_exists({e.n(SK)}) OR {e.n('expiresAtMs')} <= {e.v(to_ms(now))}"
            with contextlib.suppress(ClientError):
                self._call("put_item", table, TableName=self.ledger_table, Item=_to_ddb(item),
                           ConditionExpression=cond, **e.args())
                return Lease(table, owner, token, item["expiresAtMs"] / 1000)
            holder = self._get_l(table, "lease")
            if holder is not None and holder.get("leaseToken") == token:  # our retry had won
                return Lease(table, owner, token, holder["expiresAtMs"] / 1000)
            if holder is not None and holder["expiresAtMs"] > to_ms(self.clock()):
                msg = lease_held_message(holder.get("owner"), holder["expiresAtMs"])
                raise LeaseHeld(msg, table=table)
        raise LeaseHeld("lease is contended; try again", table=table)

    def renew_lease(self, lease: Lease, ttl_seconds: float) -> Lease:
        now = self.clock()
        expires_ms = to_ms(now + ttl_seconds)
        e = _Expr()
        cond = e.lease_held(lease, to_ms(now))
        try:
            self._call("update_item", lease.table, TableName=self.ledger_table,
                       Key=self._lkey(lease.table, "lease"), ConditionExpression=cond,
                       UpdateExpression=f"SET {e.n('expiresAtMs')} = {e.v(expires_ms)}",
                       **e.args())
        except ClientError as exc:
            raise self._lease_lost(lease) from exc
        return Lease(lease.table, lease.owner, lease.token, expires_ms / 1000)

    def release_lease(self, lease: Lease) -> None:
        e = _Expr()
        with contextlib.suppress(ClientError):  # not ours any more: nothing to release
            self._call("delete_item", lease.table, TableName=self.ledger_table,
                       Key=self._lkey(lease.table, "lease"),
                       ConditionExpression=f"{e.n('leaseToken')} = {e.v(lease.token)}",
                       **e.args())

    def set_intent(self, lease: Lease, intent: dict[str, Any]) -> None:
        item = {KEY: lease.table, SK: "intent", "leaseToken": lease.token,
                "intent": check_item(intent, table=lease.table)}
        put = {"Put": {"TableName": self.ledger_table, "Item": _to_ddb(item)}}
        if codes := self._transact(lease, [self._lease_check(lease), put]):
            raise StoreError(f"set_intent cancelled: {codes}", table=lease.table)

    def get_intent(self, table: str) -> dict[str, Any] | None:
        item = self._get_l(table, "intent")
        return None if item is None else item.get("intent", {})

    def clear_intent(self, lease: Lease) -> None:
        delete = {"Delete": {"TableName": self.ledger_table,
                             "Key": self._lkey(lease.table, "intent")}}
        if codes := self._transact(lease, [self._lease_check(lease), delete]):
            raise StoreError(f"clear_intent cancelled: {codes}", table=lease.table)

    # ------------------------------------------------------------------ the commit and ledger
    def commit_window(
        self,
        lease: Lease,
        ledger_entry: dict[str, Any],
        *,
        entry_changes: dict[str, Any],
        expected: dict[str, Any],
    ) -> None:
        """One TransactWriteItems: lease check, conditional entry update, seq, ledger, intent.

        The seq item is advanced optimistically (read it, then `seq = :read` in the
        transaction) so the ledger item can carry its own seq; losing only that is retried."""
        table = lease.table
        changes = check_changes(table, entry_changes)
        entry = prepare_ledger_entry(lease, ledger_entry, self.clock())
        if SK in entry:
            raise StoreError(f"a ledger entry may not carry {SK!r} (the sort key)", table=table)
        pk = entry[PARTITION_KEY]
        for _ in range(self.max_attempts):
            prev = (self._get_l(table, "seq") or {}).get(SEQ)
            entry[SEQ] = (prev or 0) + 1
            ce, se = _Expr(), _Expr()
            control = {"TableName": self.control_table, "Key": {KEY: {"S": table}},
                       "ConditionExpression": ce.expected(expected)}
            if changes:
                control["UpdateExpression"] = ce.changes(changes)
            seq_cond = (f"attribute_not_exists({se.n(SK)})" if prev is None
                        else f"{se.n(SEQ)} = {se.v(prev)}")
            seq_item = {KEY: table, SK: "seq", SEQ: entry[SEQ], "lastPartitionKey": pk}
            codes = self._transact(lease, [
                self._lease_check(lease),
                {"Update" if changes else "ConditionCheck": {**control, **ce.args()}},
                {"Put": {"TableName": self.ledger_table, "Item": _to_ddb(seq_item),
                         "ConditionExpression": seq_cond, **se.args()}},
                {"Put": {"TableName": self.ledger_table,
                         "Item": _to_ddb({**entry, SK: f"window#{pk}"})}},
                {"Delete": {"TableName": self.ledger_table, "Key": self._lkey(table, "intent")}},
            ])
            if not codes:
                return
            if codes[1] == "ConditionalCheckFailed":
                now = self.get_entry(table)
                problems = mismatches(now, expected) or ["the entry changed meanwhile"]
                raise WatermarkConflict("commit refused: " + "; ".join(problems), table=table)
            if codes[2] != "ConditionalCheckFailed":
                raise StoreError(f"commit cancelled: {codes}", table=table)
        raise StoreError("the commit sequence kept moving; gave up", table=table)

    def ledger(self, table: str) -> list[dict[str, Any]]:
        e = _Expr()
        cond = f"{e.n(KEY)} = {e.v(table)} AND begins_with({e.n(SK)}, {e.v('window#')})"
        kwargs: dict[str, Any] = {"TableName": self.ledger_table, "ConsistentRead": True,
                                  "KeyConditionExpression": cond, **e.args()}
        out: list[dict[str, Any]] = []
        while True:
            resp = self._call("query", table, **kwargs)
            out += [_strip(_from_ddb(i)) for i in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                return sort_ledger(out)
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def ledger_entry(self, table: str, partition_key: str) -> dict[str, Any] | None:
        item = self._get_l(table, f"window#{partition_key}")
        return None if item is None else _strip(item)

    def last_committed(self, table: str) -> dict[str, Any] | None:
        seq = self._get_l(table, "seq")
        return None if seq is None else self.ledger_entry(table, seq["lastPartitionKey"])


def _strip(item: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (item or {}).items() if k != SK}


__all__ = ["DynamoStore"]
