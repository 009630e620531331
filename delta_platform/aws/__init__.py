"""AWS mode: DMS as the delta engine, DynamoDB as the control store, provisioning and IAM."""
