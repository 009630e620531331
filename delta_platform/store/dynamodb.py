"""The AWS control store: the reference's `etlConfiguration` table plus a ledger table.

The ledger table (pk `targetTableName`, sk `sk`) holds, per table, one item per committed
window (`window#<partitionKey>`), the lease (`lease`), the publish intent (`intent`) and the
commit sequence (`seq`). Keeping them under one partition key lets `commit_window` be a single
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
_RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "TransactionInProgressException",
    "InternalServerError",
}
_RETRYABLE_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
_CONDITIONAL = {"ConditionalCheckFailedException", "TransactionCanceledException"}
_ser, _deser = TypeSerializer(), TypeDeserializer()


def _to_ddb(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in item.items()}


def _from_ddb(item: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if item is None else normalize({k: _deser.deserialize(v) for k, v in item.items()})


class _Expr:
    """Placeholders for one request: every attribute name and value goes through #n/:v."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def n(self, attr: str) -> str:
        key = f"#n{len(self.names)}"
        self.names[key] = attr
        return key

    def v(self, value: Any) -> str:
        key = f":v{len(self.values)}"
        self.values[key] = _ser.serialize(value)
        return key

    def condition(self, expected: dict[str, Any]) -> str:
        """The entry must exist, and each expected attribute equal (or, for None, be absent)."""
        parts = [f"attribute_exists({self.n(KEY)})"]
        for attr, want in expected.items():
            if want is None:
                parts.append(f"attribute_not_exists({self.n(attr)})")
            else:
                parts.append(f"{self.n(attr)} = {self.v(want)}")
        return " AND ".join(parts)

    def update(self, changes: dict[str, Any]) -> str:
        sets = [f"{self.n(a)} = {self.v(v)}" for a, v in changes.items() if v is not None]
        removes = [self.n(a) for a, v in changes.items() if v is None]
        return " ".join(
            p for p in (sets and "SET " + ", ".join(sets), removes and "REMOVE " + ", ".join(removes)) if p
        )

    def args(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ExpressionAttributeNames": self.names}
        if self.values:
            out["ExpressionAttributeValues"] = self.values
        return out


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
        self.control_table = control_table
        self.ledger_table = ledger_table
        self.clock = clock
        self.max_attempts = max_attempts
        self.page_size = page_size
        if client is None:
            config = client_kwargs.pop("config", Config(retries={"mode": "standard", "max_attempts": 3}))
            client = (session or boto3.session.Session()).client(
                "dynamodb", endpoint_url=endpoint_url, region_name=region_name, config=config,
                **client_kwargs,
            )
        self.client = client

    def __repr__(self) -> str:
        return f"DynamoStore({self.control_table!r}, {self.ledger_table!r})"

    # ------------------------------------------------------------------ plumbing
    def _call(self, op: str, table: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Call with bounded exponential backoff on throttling and transaction conflicts;
        conditional failures are re-raised for the caller, everything else is a StoreError."""
        for attempt in range(self.max_attempts):
            try:
                return getattr(self.client, op)(**kwargs)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                reasons = {r.get("Code") for r in exc.response.get("CancellationReasons", [])}
                retry = code in _RETRYABLE or (
                    code == "TransactionCanceledException"
                    and reasons & _RETRYABLE_REASONS
                    and reasons <= _RETRYABLE_REASONS | {"None"}
                )
                if not retry:
                    if code in _CONDITIONAL:
                        raise
                    raise StoreError(f"DynamoDB {op} failed: {exc}", table=table) from exc
            except BotoCoreError as exc:
                raise StoreError(f"DynamoDB {op} failed: {exc}", table=table) from exc
            if attempt + 1 < self.max_attempts:
                time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))  # full jitter
        raise StoreError(f"DynamoDB {op} still throttled after {self.max_attempts} tries", table=table)

    def _lkey(self, table: str, sk: str) -> dict[str, Any]:
        return {KEY: {"S": table}, SK: {"S": sk}}

    def _get(self, table_name: str, key: dict[str, Any], table: str) -> dict[str, Any] | None:
        resp = self._call("get_item", table, TableName=table_name, Key=key, ConsistentRead=True)
        return _from_ddb(resp.get("Item"))

    def _lease_check(self, lease: Lease, now_ms: int) -> dict[str, Any]:
        e = _Expr()
        cond = f"{e.n('leaseToken')} = {e.v(lease.token)} AND {e.n('expiresAtMs')} > {e.v(now_ms)}"
        return {"ConditionCheck": {"TableName": self.ledger_table,
                                   "Key": self._lkey(lease.table, "lease"),
                                   "ConditionExpression": cond, **e.args()}}

    def _lease_lost(self, lease: Lease) -> LeaseHeld:
        holder = self._get(self.ledger_table, self._lkey(lease.table, "lease"), lease.table)
        if holder is None:
            return LeaseHeld("lease lost: no lease is held", table=lease.table)
        if holder.get("leaseToken") == lease.token:
            return LeaseHeld("lease lost: it expired", table=lease.table)
        msg = lease_held_message(holder.get("owner"), holder.get("expiresAtMs", 0))
        return LeaseHeld("lease lost: " + msg, table=lease.table)

    def _transact(self, lease: Lease, items: list[dict[str, Any]]) -> list[str]:
        """Run a transaction; [] on success, else each item's cancellation code."""
        try:
            self._call("transact_write_items", lease.table, TransactItems=items,
                       ClientRequestToken=str(uuid.uuid4()))
            return []
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise StoreError(f"DynamoDB transaction failed: {exc}", table=lease.table) from exc
            codes = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
            if codes and codes[0] == "ConditionalCheckFailed":
                raise self._lease_lost(lease) from exc
            return codes or ["Unknown"]

    # ------------------------------------------------------------------ tables
    def init(self) -> None:
        """Create both tables (on-demand) if absent and wait until ACTIVE; idempotent."""
        for name, keys in ((self.control_table, [KEY]), (self.ledger_table, [KEY, SK])):
            types = ("HASH", "RANGE")[: len(keys)]
            schema = [{"AttributeName": k, "KeyType": t} for k, t in zip(keys, types, strict=True)]
            try:
                desc = self._call("describe_table", TableName=name)["Table"]
            except StoreError as exc:
                if "ResourceNotFoundException" not in str(exc):
                    raise
                try:
                    self._call("create_table", TableName=name, KeySchema=schema,
                               BillingMode="PAY_PER_REQUEST",
                               AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"}
                                                     for k in keys])
                except StoreError as exc2:  # someone else created it meanwhile
                    if "ResourceInUseException" not in str(exc2):
                        raise
                desc = {"KeySchema": schema, "TableStatus": "CREATING"}
            if sorted(desc["KeySchema"], key=lambda k: k["KeyType"]) != schema:
                raise StoreError(f"DynamoDB table {name} exists with key {desc['KeySchema']}")
            if desc.get("TableStatus") != "ACTIVE":
                self.client.get_waiter("table_exists").wait(
                    TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 300})

    # ------------------------------------------------------------------ control items
    def put_entry(self, item: dict[str, Any]) -> None:
        name = entry_key(item)
        self._call("put_item", name, TableName=self.control_table,
                   Item=_to_ddb(check_item(item, table=name)))

    def get_entry(self, table: str) -> dict[str, Any] | None:
        return self._get(self.control_table, {KEY: {"S": table}}, table)

    def scan_entries(self) -> Iterator[dict[str, Any]]:
        """Every item: DynamoDB stops each page at 1 MB, so follow LastEvaluatedKey."""
        kwargs: dict[str, Any] = {"TableName": self.control_table, "ConsistentRead": True}
        if self.page_size:
            kwargs["Limit"] = self.page_size
        while True:
            resp = self._call("scan", **kwargs)
            for item in resp.get("Items", []):
                yield _from_ddb(item)
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def update_entry(
        self, table: str, changes: dict[str, Any], *, expected: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        changes, expected = check_changes(table, changes), expected or {}
        if not changes:  # nothing to write: a consistent read is the same check
            item = self.get_entry(table)
            if item is None:
                raise StoreError("no control entry to update", table=table)
            if problems := mismatches(item, expected):
                raise WatermarkConflict("condition failed: " + "; ".join(problems), table=table)
            return item
        e = _Expr()
        cond = e.condition(expected)
        try:
            resp = self._call(
                "update_item", table, TableName=self.control_table, Key={KEY: {"S": table}},
                UpdateExpression=e.update(changes), ConditionExpression=cond,
                ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD", **e.args())
        except ClientError as exc:
            old = _from_ddb(exc.response.get("Item")) or self.get_entry(table)
            if old is None:
                raise StoreError("no control entry to update", table=table) from exc
            problems = mismatches(old, expected) or ["the entry changed concurrently"]
            raise WatermarkConflict("condition failed: " + "; ".join(problems), table=table) from exc
        return _from_ddb(resp["Attributes"]) or {}

    def delete_entry(self, table: str) -> None:
        self._call("delete_item", table, TableName=self.control_table, Key={KEY: {"S": table}})

    # ------------------------------------------------------------------ leases and intents
    def acquire_lease(self, table: str, owner: str, ttl_seconds: float) -> Lease:
        token = uuid.uuid4().hex
        for _ in range(3):  # a holder that vanishes between our write and our read: try again
            now = self.clock()
            expires_ms = to_ms(now + ttl_seconds)
            e = _Expr()
            cond = f"attribute_not_exists({e.n(SK)}) OR {e.n('expiresAtMs')} <= {e.v(to_ms(now))}"
            item = {KEY: table, SK: "lease", "owner": owner, "leaseToken": token,
                    "expiresAtMs": expires_ms}
            try:
                self._call("put_item", table, TableName=self.ledger_table, Item=_to_ddb(item),
                           ConditionExpression=cond, **e.args())
                return Lease(table, owner, token, expires_ms / 1000)
            except ClientError:
                holder = self._get(self.ledger_table, self._lkey(table, "lease"), table)
            if holder is not None and holder.get("leaseToken") == token:  # our retried write won
                return Lease(table, owner, token, holder["expiresAtMs"] / 1000)
            if holder is not None and holder["expiresAtMs"] > to_ms(self.clock()):
                raise LeaseHeld(lease_held_message(holder.get("owner"), holder["expiresAtMs"]),
                                table=table)
        raise LeaseHeld("lease is contended; try again", table=table)

    def renew_lease(self, lease: Lease, ttl_seconds: float) -> Lease:
        now = self.clock()
        expires_ms = to_ms(now + ttl_seconds)
        e = _Expr()
        cond = f"{e.n('leaseToken')} = {e.v(lease.token)} AND {e.n('expiresAtMs')} > {e.v(to_ms(now))}"
        try:
            self._call("update_item", lease.table, TableName=self.ledger_table,
                       Key=self._lkey(lease.table, "lease"), ConditionExpression=cond,
                       UpdateExpression=f"SET {e.n('expiresAtMs')} = {e.v(expires_ms)}", **e.args())
        except ClientError as exc:
            raise self._lease_lost(lease) from exc
        return Lease(lease.table, lease.owner, lease.token, expires_ms / 1000)

    def release_lease(self, lease: Lease) -> None:
        e = _Expr()
        with contextlib.suppress(ClientError):  # not ours any more: nothing to release
            self._call("delete_item", lease.table, TableName=self.ledger_table,
                       Key=self._lkey(lease.table, "lease"),
                       ConditionExpression=f"{e.n('leaseToken')} = {e.v(lease.token)}", **e.args())

    def set_intent(self, lease: Lease, intent: dict[str, Any]) -> None:
        item = {KEY: lease.table, SK: "intent", "leaseToken": lease.token,
                "intent": check_item(intent, table=lease.table)}
        put = {"Put": {"TableName": self.ledger_table, "Item": _to_ddb(item)}}
        if codes := self._transact(lease, [self._lease_check(lease, to_ms(self.clock())), put]):
            raise StoreError(f"set_intent cancelled: {codes}", table=lease.table)

    def get_intent(self, table: str) -> dict[str, Any] | None:
        item = self._get(self.ledger_table, self._lkey(table, "intent"), table)
        return None if item is None else item.get("intent", {})

    def clear_intent(self, lease: Lease) -> None:
        delete = {"Delete": {"TableName": self.ledger_table,
                             "Key": self._lkey(lease.table, "intent")}}
        if codes := self._transact(lease, [self._lease_check(lease, to_ms(self.clock())), delete]):
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

        The seq item is advanced optimistically (read, then `seq = :read` in the transaction)
        so the ledger item can carry its own seq; losing only that race is retried."""
        table = lease.table
        changes = check_changes(table, entry_changes)
        entry = prepare_ledger_entry(lease, ledger_entry, self.clock())
        if SK in entry:
            raise StoreError(f"ledger entry may not carry {SK!r} (the store's sort key)", table=table)
        for _ in range(self.max_attempts):
            seq_item = self._get(self.ledger_table, self._lkey(table, "seq"), table)
            prev = seq_item.get(SEQ) if seq_item else None
            entry[SEQ] = (prev or 0) + 1
            ce = _Expr()
            control: dict[str, Any] = {"TableName": self.control_table, "Key": {KEY: {"S": table}},
                                       "ConditionExpression": ce.condition(expected),
                                       "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
            if changes:
                control["UpdateExpression"] = ce.update(changes)
            control.update(ce.args())
            se = _Expr()
            seq_cond = (f"attribute_not_exists({se.n(SK)})" if prev is None
                        else f"{se.n(SEQ)} = {se.v(prev)}")
            seq_put = {"TableName": self.ledger_table, "ConditionExpression": seq_cond,
                       "Item": _to_ddb({KEY: table, SK: "seq", SEQ: entry[SEQ],
                                        "lastPartitionKey": entry[PARTITION_KEY]}), **se.args()}
            items = [
                self._lease_check(lease, to_ms(self.clock())),
                {"Update" if changes else "ConditionCheck": control},
                {"Put": seq_put},
                {"Put": {"TableName": self.ledger_table,
                         "Item": _to_ddb({**entry, SK: f"window#{entry[PARTITION_KEY]}"})}},
                {"Delete": {"TableName": self.ledger_table, "Key": self._lkey(table, "intent")}},
            ]
            codes = self._transact(lease, items)
            if not codes:
                return
            if codes[1] == "ConditionalCheckFailed":
                old = self.get_entry(table)
                problems = mismatches(old, expected) or ["the entry changed concurrently"]
                raise WatermarkConflict("commit refused: " + "; ".join(problems), table=table)
            if codes[2] != "ConditionalCheckFailed":
                raise StoreError(f"commit cancelled: {codes}", table=table)
        raise StoreError("commit sequence kept moving; gave up", table=table)

    def ledger(self, table: str) -> list[dict[str, Any]]:
        e = _Expr()
        kwargs: dict[str, Any] = {
            "TableName": self.ledger_table, "ConsistentRead": True,
            "KeyConditionExpression": f"{e.n(KEY)} = {e.v(table)} AND "
                                      f"begins_with({e.n(SK)}, {e.v('window#')})", **e.args()}
        out: list[dict[str, Any]] = []
        while True:
            resp = self._call("query", table, **kwargs)
            out += [_strip(_from_ddb(i)) for i in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                return sort_ledger(out)
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def ledger_entry(self, table: str, partition_key: str) -> dict[str, Any] | None:
        item = self._get(self.ledger_table, self._lkey(table, f"window#{partition_key}"), table)
        return None if item is None else _strip(item)

    def last_committed(self, table: str) -> dict[str, Any] | None:
        seq_item = self._get(self.ledger_table, self._lkey(table, "seq"), table)
        return None if seq_item is None else self.ledger_entry(table, seq_item["lastPartitionKey"])


def _strip(item: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(item or {})
    out.pop(SK, None)
    return out


__all__ = ["DynamoStore"]
