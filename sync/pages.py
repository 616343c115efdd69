"""Browser pages served by the sync app."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def index(request):
    """Landing page for logged-in users, with links to the API."""
    return render(request, "sync/index.html")
