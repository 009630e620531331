"""`delta-platform aws ...`: provisioning and the IAM policy, wired in by the main CLI."""

from __future__ import annotations

import argparse
import json
from typing import Any

import boto3
from botocore.config import Config

from delta_platform.aws import provision


def register(subparsers: Any) -> None:
    """Add the `aws` command group to the main argparse CLI."""
    aws = subparsers.add_parser("aws", help="AWS mode: provisioning and IAM")
    sub = aws.add_subparsers(dest="aws_command", required=True)

    init = sub.add_parser("init", help="create control/ledger tables, lake bucket and topic (idempotent)")
    _boto_args(init)
    init.add_argument("--bucket", required=True, help="lake bucket")
    init.add_argument("--control-table", default="etlConfiguration")
    init.add_argument("--ledger-table", default="etlLedger")
    init.add_argument("--topic-name", default="delta-platform")
    init.add_argument("--email", help="subscribe this address to the topic")
    init.set_defaults(func=_init)

    pol = sub.add_parser("iam-policy", help="print the least-privilege IAM policy JSON")
    pol.add_argument("--account-id", required=True)
    pol.add_argument("--region", required=True)
    pol.add_argument("--bucket", required=True, help="lake bucket")
    pol.add_argument("--output-bucket", help="DMS output bucket (default: the lake bucket)")
    pol.add_argument("--control-table", default="etlConfiguration")
    pol.add_argument("--ledger-table", default="etlLedger")
    pol.add_argument("--topic-name", default="delta-platform")
    pol.add_argument("--secret-arn", action="append", default=[], help="source secret (repeatable)")
    pol.add_argument("--dms-role-arn", action="append", default=[], help="role passed to DMS (repeatable)")
    pol.set_defaults(func=_policy)


def _boto_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region")
    p.add_argument("--endpoint-url", help="e.g. a moto or LocalStack URL")
    p.add_argument("--profile")


def _client(args: argparse.Namespace, service: str) -> Any:
    session = boto3.session.Session(profile_name=args.profile, region_name=args.region)
    return session.client(service, endpoint_url=args.endpoint_url,
                          config=Config(retries={"mode": "standard", "max_attempts": 5}))


def _init(args: argparse.Namespace) -> int:
    done = provision.init(_client(args, "dynamodb"), _client(args, "s3"), _client(args, "sns"),
                          bucket=args.bucket, control_table=args.control_table,
                          ledger_table=args.ledger_table, topic_name=args.topic_name, email=args.email,
                          region=args.region)
    print(json.dumps({"controlTable": done.control_table, "ledgerTable": done.ledger_table,
                      "bucket": done.bucket, "topicArn": done.topic_arn,
                      "subscription": done.subscription, "created": done.created}, indent=2))
    return 0


def _policy(args: argparse.Namespace) -> int:
    policy = provision.iam_policy(
        account_id=args.account_id, region=args.region, lake_bucket=args.bucket,
        output_bucket=args.output_bucket, control_table=args.control_table,
        ledger_table=args.ledger_table, topic_name=args.topic_name, secret_arns=args.secret_arn,
        dms_role_arns=args.dms_role_arn)
    print(json.dumps(policy, indent=2))
    return 0
