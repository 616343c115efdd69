"""The admin wing: the broadcast history and form, and the live monitor.

Django's admin imports ``sync.admin`` at start-up; registering the pages
here makes them appear. Owns: who may use the pages (``access``), the
broadcast form (``forms``), the history (``broadcasts``) and the monitor
(``monitor``). May import core, store (through services) and services;
never ``sync.http`` or ``sync.ws``.
"""

from sync.admin import broadcasts  # noqa: F401  (registers the pages)
