"""Where failure notices go: a log line, a webhook (local) or an SNS topic (AWS, the reference's email)."""

from __future__ import annotations

import json
import logging
from typing import Protocol

log = logging.getLogger("delta_platform")


class Notifier(Protocol):
    def notify(self, subject: str, message: str) -> None: ...


class LogNotifier:
    def notify(self, subject: str, message: str) -> None:
        log.error("%s: %s", subject, message)


class WebhookNotifier:
    """POSTs {"subject", "text"} as JSON (Slack/Teams-style incoming webhooks accept `text`)."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url, self.timeout = url, timeout

    def notify(self, subject: str, message: str) -> None:
        import urllib.request  # http.client and email: not needed to load the definitions

        body = json.dumps({"subject": subject, "text": f"{subject}\n{message}"}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout):  # noqa: S310 - configured URL
            pass


class SnsNotifier:
    """Publishes to an SNS topic; subscribe the operators' email address to it."""

    def __init__(self, topic_arn: str, region: str | None = None, endpoint_url: str | None = None):
        self.topic_arn, self.region, self.endpoint_url = topic_arn, region, endpoint_url

    def notify(self, subject: str, message: str) -> None:
        import boto3

        client = boto3.client("sns", region_name=self.region, endpoint_url=self.endpoint_url)
        client.publish(TopicArn=self.topic_arn, Subject=subject[:100], Message=message)
