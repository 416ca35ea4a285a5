"""The webhook intake's durable buffer: accepted events in a Redis Stream per source.

The web process accepts an event in one Redis round trip (:mod:`ingest.webhooks.stream`):
one script charges the token buckets, claims the idempotency key and appends the event to its
source's stream. Workers drain the streams through a consumer group and store the events in
batches (:mod:`ingest.webhooks.drain`). Nothing here imports a web or task framework.
"""
