"""Decision services: one organization's policy and safety layer behind HTTP
(docs/service.md). Flower-free and HTTP-free here (:mod:`~fedinv.service.codec`: request
<-> State; :mod:`~fedinv.service.core`: the service; :mod:`~fedinv.service.log`: the
hash-chained SQLite log; :mod:`~fedinv.service.replay`: a year driven through services);
:mod:`~fedinv.service.app` is the thin FastAPI layer (the one module importing FastAPI
and uvicorn)."""
