"""fedinv.deploy: the federation across organizations on Flower's deployment engine --
certificates and node keys, SuperLink and SuperNode processes with TLS and node
authentication, registration and run submission (docs/deployment.md). Its command line
is :mod:`fedinv.cli`'s ``deploy`` group."""
