# The smallest Django project that serves a Channels consumer under Daphne.
SECRET_KEY = "benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["daphne", "channels"]
ASGI_APPLICATION = "bench_daphne.asgi.application"
# The seed's pattern: no channel layer; state in class variables of the consumer.
CHANNEL_LAYERS = {}
USE_TZ = True
LOGGING = {"version": 1, "disable_existing_loggers": True}
