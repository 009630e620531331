"""Provisioning on moto is idempotent; the IAM policy is least-privilege; the resource wires clients."""

from __future__ import annotations

import argparse
import json
import uuid

from delta_platform.aws import cli, provision
from delta_platform.aws.dms import DmsEngine
from delta_platform.aws.resource import DmsResource
from delta_platform.store import DynamoStore


def test_init_is_idempotent(aws):
    sfx = uuid.uuid4().hex[:8]
    dynamodb, s3, sns = aws.client("dynamodb"), aws.client("s3"), aws.client("sns")
    kwargs = dict(bucket=f"lake-{sfx}", control_table=f"etlConfiguration_{sfx}",
                  ledger_table=f"etlLedger_{sfx}", topic_name=f"dp-{sfx}", email="ops@example.com")
    first = provision.init(dynamodb, s3, sns, **kwargs)
    assert len(first.created) == 5 and first.subscription
    second = provision.init(dynamodb, s3, sns, **kwargs)
    assert second.created == [] and second.topic_arn == first.topic_arn
    assert second.subscription == first.subscription
    subs = sns.list_subscriptions_by_topic(TopicArn=first.topic_arn)["Subscriptions"]
    assert [s["Endpoint"] for s in subs] == ["ops@example.com"]
    assert {f"etlConfiguration_{sfx}", f"etlLedger_{sfx}"} <= set(dynamodb.list_tables()["TableNames"])


def test_iam_policy_shape():
    policy = provision.iam_policy(account_id="123456789012", region="eu-west-1", lake_bucket="lake",
                                  output_bucket="dms-out",
                                  secret_arns=["arn:aws:secretsmanager:eu-west-1:1:secret:s"],
                                  dms_role_arns=["arn:aws:iam::123456789012:role/dms-s3"])
    assert policy["Version"] == "2012-10-17"
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert set(by_sid) == {"ControlAndLedger", "LakeObjects", "LakeBuckets", "Notify", "ListTopics", "DmsRun",
                           "DmsDeleteOnlyOwn", "SourceSecrets", "PassDmsRoles"}
    assert by_sid["ControlAndLedger"]["Resource"] == [
        "arn:aws:dynamodb:eu-west-1:123456789012:table/etlConfiguration",
        "arn:aws:dynamodb:eu-west-1:123456789012:table/etlLedger"]
    assert by_sid["LakeObjects"]["Resource"] == ["arn:aws:s3:::dms-out/*", "arn:aws:s3:::lake/*"]
    assert by_sid["DmsDeleteOnlyOwn"]["Effect"] == "Deny"
    passed = by_sid["PassDmsRoles"]["Condition"]["StringEquals"]
    assert passed == {"iam:PassedToService": "dms.amazonaws.com"}
    wildcard = [s["Sid"] for s in policy["Statement"] if s["Resource"] == "*"]
    assert wildcard == ["ListTopics"]  # the only action AWS cannot scope
    for s in policy["Statement"]:
        assert all(not a.endswith(":*") for a in s["Action"])


def test_cli_registers_the_aws_group(aws, capsys):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    sfx = uuid.uuid4().hex[:8]
    args = parser.parse_args(["aws", "init", "--endpoint-url", aws.url, "--region", "us-east-1",
                              "--bucket", f"lake-{sfx}", "--control-table", f"c_{sfx}",
                              "--ledger-table", f"l_{sfx}"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["bucket"] == f"lake-{sfx}"
    args = parser.parse_args(["aws", "iam-policy", "--account-id", "1", "--region", "us-east-1",
                              "--bucket", "b"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["Version"] == "2012-10-17"


def test_resource_builds_engine_store_and_notifier(aws):
    sfx = uuid.uuid4().hex[:8]
    sns = aws.client("sns")
    topic = sns.create_topic(Name=f"t-{sfx}")["TopicArn"]
    res = DmsResource(region_name="us-east-1", endpoint_url=aws.url, output_bucket=aws.bucket,
                      control_table=f"c_{sfx}", ledger_table=f"l_{sfx}", topic_arn=topic,
                      connections={"default": {"secret_arn": aws.secret_arn}})
    assert isinstance(res.engine(), DmsEngine)
    store = res.store()
    assert isinstance(store, DynamoStore)
    store.init()
    assert res.notifier().notify("load failed", "orders: row counts disagree")
    url = res.source_url()
    assert url.password and "pw-" not in repr(url) and url.host == "127.0.0.1"
    assert res.filesystem().get_file_info(aws.bucket).type.name == "Directory"
