"""``eventbus web``: the operator console (overview, dead letters, replay / purge, audit).

Stack, and why: Starlette (a small, typed, well-kept ASGI framework: routing, forms,
static files, exception handlers, nothing we do not use), Jinja2 templates (autoescaped
HTML), uvicorn (the reference ASGI server; serves TLS itself with --tls-cert/--tls-key and
needs no C build), a few lines of our own JS for refresh and progress (no build step, no
CDN). Redis calls stay synchronous (redis-py, as everywhere in eventbus): pages are plain
``def`` functions that Starlette runs in its thread pool.

Security model: operators log in with Redis ACL credentials and the console talks to
Redis as that user, so Redis decides which tenant's keys they can read or change.
"""
