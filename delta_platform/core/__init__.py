"""The pure core: windows, watermarks, operators and fences. No Dagster, boto3 or drivers here."""
