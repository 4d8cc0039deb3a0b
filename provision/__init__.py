"""Provisioning: what ``photoenhance init`` prepares once per deployment, before any service runs —
buckets and their lifecycle, the store's bucket notifications, CORS for the web page, the AMQP
topology and the database schema."""
