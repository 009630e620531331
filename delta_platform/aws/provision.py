"""`delta-platform aws init` and `aws iam-policy`: the AWS pieces the platform needs, idempotently."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from delta_platform.store import DynamoStore


@dataclass
class Provisioned:
    """What `init` found or created; `created` lists only what this call made."""

    control_table: str
    ledger_table: str
    bucket: str
    topic_arn: str
    subscription: str | None = None
    created: list[str] = field(default_factory=list)


def init(dynamodb: Any, s3: Any, sns: Any, *, bucket: str, control_table: str = "etlConfiguration",
         ledger_table: str = "etlLedger", topic_name: str = "delta-platform", email: str | None = None,
         region: str | None = None) -> Provisioned:
    """Create the control and ledger tables, the lake bucket and the topic; safe to run again."""
    created: list[str] = []
    existing = set(dynamodb.list_tables().get("TableNames", []))
    DynamoStore(control_table, ledger_table, client=dynamodb).init()
    created += [t for t in (control_table, ledger_table) if t not in existing]
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        kwargs: dict[str, Any] = {}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(Bucket=bucket, **kwargs)
        created.append(f"s3://{bucket}")
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True})
    topics = {t["TopicArn"] for t in _all_topics(sns)}
    topic_arn = sns.create_topic(Name=topic_name)["TopicArn"]  # CreateTopic is idempotent by name
    if topic_arn not in topics:
        created.append(topic_arn)
    subscription = None
    if email:
        subs = sns.list_subscriptions_by_topic(TopicArn=topic_arn).get("Subscriptions", [])
        match = [s for s in subs if s["Protocol"] == "email" and s["Endpoint"] == email]
        if match:
            subscription = match[0]["SubscriptionArn"]
        else:
            subscription = sns.subscribe(TopicArn=topic_arn, Protocol="email", Endpoint=email,
                                         ReturnSubscriptionArn=True)["SubscriptionArn"]
            created.append(f"subscription {email}")
    return Provisioned(control_table, ledger_table, bucket, topic_arn, subscription, created)


def _all_topics(sns: Any) -> list[dict[str, Any]]:
    return [t for page in sns.get_paginator("list_topics").paginate() for t in page.get("Topics", [])]


def iam_policy(*, account_id: str, region: str, lake_bucket: str, output_bucket: str | None = None,
               control_table: str = "etlConfiguration", ledger_table: str = "etlLedger",
               topic_name: str = "delta-platform", secret_arns: list[str] | None = None,
               dms_role_arns: list[str] | None = None) -> dict[str, Any]:
    """Least privilege for the process running Dagster: named tables, buckets, topic and secrets;
    DMS actions on `*` only where DMS cannot scope by resource at creation time."""
    out_bucket = output_bucket or lake_bucket
    table = f"arn:aws:dynamodb:{region}:{account_id}:table"
    buckets = sorted({lake_bucket, out_bucket})
    statements: list[dict[str, Any]] = [
        {"Sid": "ControlAndLedger", "Effect": "Allow",
         "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                    "dynamodb:Query", "dynamodb:Scan", "dynamodb:ConditionCheckItem",
                    "dynamodb:DescribeTable", "dynamodb:CreateTable", "dynamodb:ListTables"],
         "Resource": [f"{table}/{control_table}", f"{table}/{ledger_table}"]},
        {"Sid": "LakeObjects", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
         "Resource": [f"arn:aws:s3:::{b}/*" for b in buckets]},
        {"Sid": "LakeBuckets", "Effect": "Allow",
         "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:CreateBucket",
                    "s3:PutBucketPublicAccessBlock"],
         "Resource": [f"arn:aws:s3:::{b}" for b in buckets]},
        {"Sid": "Notify", "Effect": "Allow",
         "Action": ["sns:Publish", "sns:CreateTopic", "sns:Subscribe", "sns:ListSubscriptionsByTopic"],
         "Resource": [f"arn:aws:sns:{region}:{account_id}:{topic_name}"]},
        {"Sid": "ListTopics", "Effect": "Allow", "Action": ["sns:ListTopics"], "Resource": "*"},
        {"Sid": "DmsRun", "Effect": "Allow",
         "Action": ["dms:CreateEndpoint", "dms:DeleteEndpoint", "dms:CreateReplicationTask",
                    "dms:StartReplicationTask", "dms:StopReplicationTask", "dms:DeleteReplicationTask",
                    "dms:DescribeReplicationTasks", "dms:DescribeTableStatistics",
                    "dms:CreateReplicationInstance", "dms:DeleteReplicationInstance",
                    "dms:DescribeReplicationInstances", "dms:AddTagsToResource", "dms:ListTagsForResource"],
         "Resource": f"arn:aws:dms:{region}:{account_id}:*"},
        # DMS resources are created with the tag below; only tagged ones may be deleted.
        {"Sid": "DmsDeleteOnlyOwn", "Effect": "Deny",
         "Action": ["dms:DeleteEndpoint", "dms:DeleteReplicationTask", "dms:DeleteReplicationInstance"],
         "Resource": f"arn:aws:dms:{region}:{account_id}:*",
         "Condition": {"Null": {"aws:ResourceTag/delta-platform:attempt": "true"}}},
    ]
    if secret_arns:
        statements.append({"Sid": "SourceSecrets", "Effect": "Allow",
                           "Action": ["secretsmanager:GetSecretValue"], "Resource": sorted(secret_arns)})
    if dms_role_arns:
        statements.append({"Sid": "PassDmsRoles", "Effect": "Allow", "Action": ["iam:PassRole"],
                           "Resource": sorted(dms_role_arns),
                           "Condition": {"StringEquals": {"iam:PassedToService": "dms.amazonaws.com"}}})
    return {"Version": "2012-10-17", "Statement": statements}
