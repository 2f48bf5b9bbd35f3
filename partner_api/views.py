"""The staff page of partner API tokens: the list, a new one (shown once, on the next page only), revoking one.
The admin does the same (partner_api.admin), with the same form."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import add_never_cache_headers

from feeds.views.access import staff_required
from partner_api.forms import ApiTokenForm
from partner_api.models import ApiToken

SESSION_KEY = "mpfeed-new-api-token"


@staff_required(read="partner_api.view_apitoken", write="partner_api.add_apitoken")
def token_list(request):
    form = ApiTokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        token, raw = ApiToken.issue(
            data["name"], data["scopes"], user=request.user, expires_at=data["expires_at"],
            workspaces=data["workspaces"],
        )  # fmt: skip
        request.session[SESSION_KEY] = {"id": token.pk, "value": raw}
        messages.success(request, f"Token {token.name} created. Copy it now: it is shown only once.")
        return redirect("api_tokens:list")
    new = request.session.pop(SESSION_KEY, None)
    tokens = ApiToken.objects.select_related("created_by").prefetch_related("workspaces")
    context = {
        "form": form,
        "tokens": tokens,
        "new_token": new["value"] if new else None,
        "may_add": request.user.has_perm("partner_api.add_apitoken"),
        "may_revoke": request.user.has_perm("partner_api.change_apitoken"),
    }
    response = render(request, "partner_api/tokens.html", context)
    add_never_cache_headers(response)  # it may show a new token: kept in no cache
    return response


@staff_required(write="partner_api.change_apitoken")
def token_revoke(request, token_id):
    token = get_object_or_404(ApiToken, pk=token_id)
    if token.revoked_at is None:
        token.revoke()
        messages.success(request, f"Token {token} revoked: its calls are refused from now on.")
    return redirect("api_tokens:list")
