"""fedinv.federation: federated training without importing Flower -- the task (what a
client computes on its private data and how the server averages), each organization's
private data folder, the local simulated federation (``fedinv federate``, which drives
Flower's command lines as processes) and process-tree handling. The Flower apps that
wrap the task are ``clients/`` and ``server/``."""
