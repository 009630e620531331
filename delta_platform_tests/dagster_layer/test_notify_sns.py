"""The run-failure notification reaches an SNS topic (moto's server), as the reference's email did."""

from __future__ import annotations

import json

import boto3

from delta_platform.dagster_layer.notify import SnsNotifier


def test_sns_notifier_publishes_to_the_topic(moto_server: str) -> None:
    sns = boto3.client("sns", endpoint_url=moto_server, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=moto_server, region_name="us-east-1")
    topic = sns.create_topic(Name="delta-platform-failures")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="ops-inbox")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
    queue_arn = attributes["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    SnsNotifier(topic, region="us-east-1", endpoint_url=moto_server).notify(
        "delta_platform: load of orders_s3 failed", "partition 2026-01-01-05:00: row counts disagree"
    )

    messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", [])
    assert len(messages) == 1
    body = json.loads(messages[0]["Body"])
    assert body["Subject"] == "delta_platform: load of orders_s3 failed"
    assert "row counts disagree" in body["Message"]
