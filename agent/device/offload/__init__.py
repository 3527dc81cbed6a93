"""The device end of the dock link: server, TLS transport, custody, purge."""
