"""The service's routes, by concern (FastAPI ``APIRouter``\\ s the app includes in this order):
:mod:`~bertprobe.serve.routers.predict` (``/v1/predict``, ``/v1/explain``),
:mod:`~bertprobe.serve.routers.admin` (``/v1/model``, ``/v1/admin/reload``) and
:mod:`~bertprobe.serve.routers.ops` (``/healthz``, ``/metrics``, the try-it page ``/``)."""
