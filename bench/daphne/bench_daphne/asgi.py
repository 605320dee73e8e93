import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_daphne.settings")

import django  # noqa: E402

django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from bench_daphne.consumers import Relay  # noqa: E402

application = ProtocolTypeRouter(
    {"websocket": URLRouter([re_path(r"^ws/relay/(?P<doc>[^/]+)$", Relay.as_asgi())])}
)
