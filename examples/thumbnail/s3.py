"""The few S3/SQS steps the thumbnail quickstart needs, against moto on 127.0.0.1:4566 (or
S3_ENDPOINT: the container bundle, deploy/thumbnail/, runs `setup` against http://s3:4566).

  s3.py setup                      buckets `photos` and `thumbnails`, queue `photo-uploads`,
                                   and the notification photos → queue (ObjectCreated:*),
                                   once the endpoint answers (up to 60 s)
  s3.py put BUCKET KEY FILE        upload a file
  s3.py wait BUCKET KEY            wait (up to 60 s) until the object exists; print its size
  s3.py list BUCKET                list the keys
"""
import os
import sys
import time

import boto3

ENDPOINT = os.environ.get("S3_ENDPOINT", "http://127.0.0.1:4566")
s3 = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1")
sqs = boto3.client("sqs", endpoint_url=ENDPOINT, region_name="us-east-1")


def setup():
    deadline = time.time() + 60
    while True:
        try:
            s3.list_buckets()
            break
        except Exception:  # not listening yet
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    for bucket in ("photos", "thumbnails"):
        s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName="photo-uploads")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket="photos",
        NotificationConfiguration={
            "QueueConfigurations": [
                {"Id": "uploads", "QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}
            ]
        },
    )
    print(f"buckets photos, thumbnails; queue {queue_url}; photos notifies it")


def put(bucket, key, path):
    ctype = "image/jpeg" if path.endswith((".jpg", ".jpeg")) else "application/octet-stream"
    with open(path, "rb") as f:
        s3.put_object(Bucket=bucket, Key=key, Body=f.read(), ContentType=ctype)
    print(f"uploaded s3://{bucket}/{key}")


def wait(bucket, key):
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
            print(f"s3://{bucket}/{key}: {head['ContentLength']} bytes, {head.get('ContentType')}")
            return
        except s3.exceptions.ClientError:
            time.sleep(0.2)
    sys.exit(f"s3://{bucket}/{key} did not appear within 60 s")


def list_keys(bucket):
    for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        print(o["Key"])


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"setup": setup, "put": put, "wait": wait, "list": list_keys}[cmd](*args)
