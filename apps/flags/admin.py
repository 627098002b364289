"""Flags admin: rules inline, every write through the flag services with a reason, per-flag history with
rollback, an explain view, scheduled changes and the read-only audit trail."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import models
from django.db.models import Q
from django.forms.formsets import DELETION_FIELD_NAME
from django.forms.models import BaseInlineFormSet
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from apps.core.admin_base import ReadOnlyAdmin
from apps.core.errors import TaskplaneError
from apps.flags.context import context_for_user
from apps.flags.definitions import DefinitionError, definition_of, validate_definition
from apps.flags.evaluation import get_details
from apps.flags.models import Flag, FlagChange, FlagRule, ScheduledFlagChange
from apps.flags.serializers import storage_errors
from apps.flags.services import flag_delete, flag_rollback, flag_save, scheduled_changes_apply

FLAG_FIELDS = ("key", "description", "owner", "kind", "enabled", "starts_at", "ends_at", "variants", "default_value")
_ERROR_PATH = re.compile(r"(?P<head>\w+)(?:\[(?P<index>\d+)\])?\.?(?P<rest>.*)")
_CHANGE_ID = re.compile(r"[1-9][0-9]{0,17}")
JSON_WIDGET = {"widget": forms.Textarea(attrs={"rows": 3, "cols": 48, "class": "vLargeTextField"})}


def pretty(value: Any) -> str:
    """JSON as operators read it in admin."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


# --- Building a definition from the change form ------------------------------------------------------


def flag_fields(instance: Flag, cleaned: Mapping[str, Any]) -> dict[str, Any]:
    """The flag's own definition fields: the form's cleaned values over the instance's (read-only key)."""
    return {name: cleaned[name] if name in cleaned else getattr(instance, name) for name in FLAG_FIELDS}


def rule_forms(formset: BaseInlineFormSet) -> list[forms.ModelForm]:
    """The inline forms that become the new definition's rules, in position order."""
    kept = [form for form in formset.forms if form.cleaned_data and not form.cleaned_data.get(DELETION_FIELD_NAME)]
    return sorted(kept, key=lambda form: form.cleaned_data.get("position") or 0)


def rule_of(form: forms.ModelForm) -> dict[str, Any]:
    """One rule of the definition, from its inline form."""
    data = form.cleaned_data
    return {"kind": data.get("kind"), "params": data.get("params") or {},
            "constraints": data.get("constraints") or [], "variant": data.get("variant") or ""}


def _place(path: str, available) -> tuple[str | None, str]:
    """Which form field an error path belongs to, and the prefix that keeps nested paths readable."""
    field = re.split(r"[.\[]", path, maxsplit=1)[0]
    if field not in available:
        return None, f"{path}: "
    return field, "" if path == field else f"{path}: "


class StorableJSONMixin:
    """Reject JSON that PostgreSQL cannot store (NUL characters, non-finite numbers) as field errors."""

    def clean(self):
        cleaned = super().clean()
        for name, field in self.fields.items():
            if isinstance(field, forms.JSONField) and name in cleaned:
                for error in storage_errors(cleaned[name], name):
                    self.add_error(name, f"{error['field']}: {error['message']}")
        return cleaned


class FlagRuleForm(StorableJSONMixin, forms.ModelForm):
    class Meta:
        model = FlagRule
        fields = ["position", "kind", "params", "constraints", "variant"]


class FlagAdminForm(StorableJSONMixin, forms.ModelForm):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
                             help_text="Why this change? Recorded with it in the flag's history.")

    class Meta:
        model = Flag
        fields = list(FLAG_FIELDS)

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        # The flag's own fields only: the rules are checked by the inline formset, against these values.
        try:
            validate_definition({**flag_fields(self.instance, cleaned), "rules": []})
        except DefinitionError as exc:
            for error in exc.errors:
                field, prefix = _place(error["field"], self.fields)
                self.add_error(field, f"{prefix}{error['message']}")
        return cleaned


class FlagRuleFormSet(BaseInlineFormSet):
    def clean(self):
        super().clean()
        if any(self.errors):
            return
        # By now the flag form has copied its cleaned values onto self.instance (the same object).
        ordered = rule_forms(self)
        definition = {**flag_fields(self.instance, {}), "rules": [rule_of(form) for form in ordered]}
        try:
            validate_definition(definition)
        except DefinitionError as exc:
            for error in exc.errors:
                match = _ERROR_PATH.fullmatch(error["field"])
                if not match or match["head"] != "rules" or match["index"] is None:
                    continue  # one of the flag's own fields: FlagAdminForm shows it
                form = ordered[int(match["index"])]
                field, prefix = _place(match["rest"] or "kind", form.fields)
                form.add_error(field, f"{prefix}{error['message']}")


class FlagRuleInline(admin.TabularInline):
    model = FlagRule
    form = FlagRuleForm
    formset = FlagRuleFormSet
    fields = ("position", "kind", "params", "constraints", "variant")
    ordering = ("position",)
    extra = 1
    formfield_overrides = {models.JSONField: JSON_WIDGET}

    # Rules are part of their flag (saved with it by flag_save): the flag's permissions govern them.
    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("flags.view_flag") or request.user.has_perm("flags.change_flag")

    def has_add_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("flags.change_flag" if obj else "flags.add_flag")

    def has_change_permission(self, request, obj=None) -> bool:
        return self.has_add_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self.has_add_permission(request, obj)


# --- Explain --------------------------------------------------------------------------------------


class ExplainForm(forms.Form):
    user = forms.IntegerField(label="User id", required=False, min_value=1, max_value=2**63 - 1,
                              help_text="Evaluate as this user: id, groups and staff, plus the project's hook.")
    context = forms.JSONField(required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
                              help_text='Attributes such as {"plan": "pro", "app_version": "2.4.0"}; '
                                        "they override the user's.")

    def clean_user(self):
        user_id = self.cleaned_data["user"]
        if user_id is None:
            return None
        user = get_user_model().objects.filter(pk=user_id).first()
        if user is None:
            raise ValidationError("No user has this id.")
        return user

    def clean_context(self):
        value = self.cleaned_data["context"]
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise ValidationError("Enter a JSON object.")
        return value

    def evaluation_context(self) -> dict[str, Any]:
        """The context to evaluate with: the user's, then the entered attributes."""
        user = self.cleaned_data["user"]
        return {**(context_for_user(user) if user else {}), **self.cleaned_data["context"]}


def explain(flag: Flag, context: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate ``flag`` for ``context`` with the reasoning, as the explain page shows it."""
    details = get_details(flag.key, flag.default_value if flag.kind == Flag.Kind.MULTIVARIATE else False,
                          context, explain=True)
    rules = definition_of(flag)["rules"]
    matched = rules[details.rule_index] if details.rule_index is not None and details.rule_index < len(rules) else None
    return {"details": details, "value": pretty(details.value), "context": pretty(dict(context)),
            "matched_rule": pretty(matched) if matched else None}


# --- Flags ----------------------------------------------------------------------------------------


@admin.register(Flag)
class FlagAdmin(admin.ModelAdmin):
    form = FlagAdminForm
    inlines = [FlagRuleInline]
    list_display = ("key", "kind", "enabled", "version", "owner", "updated_at")
    list_filter = ("kind", "enabled")
    search_fields = ("key", "description", "owner")
    fieldsets = (
        (None, {"fields": ("key", "description", "owner", "kind", "enabled")}),
        ("Window", {"fields": ("starts_at", "ends_at")}),
        ("Variants (multivariate flags)", {"fields": ("variants", "default_value")}),
        ("This change", {"fields": ("reason", "version", "updated_at")}),
    )
    readonly_fields = ("version", "updated_at")
    formfield_overrides = {models.JSONField: JSON_WIDGET}

    def get_readonly_fields(self, request, obj=None):
        # The key names the flag everywhere (code, audit, snapshot): renaming would be a different flag.
        return (*self.readonly_fields, "key") if obj else self.readonly_fields

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # bulk deletes would skip the reason and the audit
        return actions

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("<path:object_id>/rollback/", self.admin_site.admin_view(self.rollback_view), name=f"{name}_rollback"),
            path("<path:object_id>/explain/", self.admin_site.admin_view(self.explain_view), name=f"{name}_explain"),
            *super().get_urls(),
        ]

    # Saving: the admin's own saves are bypassed; flag_save validates, versions, audits and signals.

    def save_model(self, request, obj, form, change) -> None:
        pass  # saved with its rules in save_related, where the inline formset is at hand

    def save_related(self, request, form, formsets, change) -> None:
        formset = next((formset for formset in formsets if isinstance(formset, FlagRuleFormSet)), None)
        if formset is not None:
            rules = [rule_of(rule_form) for rule_form in rule_forms(formset)]
        else:  # no inline on the page: keep the stored rules rather than wiping them
            rules = definition_of(form.instance)["rules"] if change else []
        flag = flag_save(definition={**flag_fields(form.instance, form.cleaned_data), "rules": rules},
                         actor=request.user.get_username(), reason=form.cleaned_data["reason"])
        form.instance.pk, form.instance.version = flag.pk, flag.version

    def construct_change_message(self, request, form, formsets, add=False):
        # The default reads what the formsets saved, and they saved nothing; the audit row has the diff.
        return f"Saved as version {form.instance.version}: {form.cleaned_data['reason']}"

    def delete_view(self, request, object_id, extra_context=None):
        if request.method == "POST" and not request.POST.get("reason", "").strip():
            self.message_user(request, "Give a reason for deleting this flag.", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request, obj) -> None:
        flag_delete(key=obj.key, actor=request.user.get_username(), reason=request.POST["reason"])

    # History, rollback and explain.

    def _flag_or_redirect(self, request, object_id):
        flag = self.get_object(request, unquote(object_id))
        if flag is None:
            return None, self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        return flag, None

    def history_view(self, request, object_id, extra_context=None):
        flag, redirect = self._flag_or_redirect(request, object_id)
        if redirect:
            return redirect
        if not self.has_view_or_change_permission(request, flag):
            raise PermissionDenied
        page = Paginator(FlagChange.objects.filter(flag_key=flag.key), 50).get_page(request.GET.get("p"))
        rows = [
            {"change": change, "restorable": change.after is not None and not (page.number == 1 and index == 0),
             "diff": [(item["field"], pretty(item["before"]), pretty(item["after"])) for item in change.diff]}
            for index, change in enumerate(page)
        ]
        context = {
            **self.admin_site.each_context(request), **(extra_context or {}),
            "title": f"History of {flag.key}", "opts": self.opts, "object": flag, "page": page, "rows": rows,
            "can_rollback": self.has_change_permission(request, flag),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/flags/flag/history.html", context)

    def rollback_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        flag, redirect = self._flag_or_redirect(request, object_id)
        if redirect:
            return redirect
        if not self.has_change_permission(request, flag):
            raise PermissionDenied
        change_id = request.POST.get("change_id", "")
        if not _CHANGE_ID.fullmatch(change_id):
            self.message_user(request, "Pick a change to roll back to.", messages.ERROR)
        else:
            try:
                restored = flag_rollback(key=flag.key, change_id=int(change_id), actor=request.user.get_username(),
                                         reason=request.POST.get("reason", ""))
            except TaskplaneError as exc:
                details = "; ".join(f"{error['field']}: {error['message']}" for error in exc.errors)
                self.message_user(request, f"Not rolled back: {exc.detail} {details}".strip(), messages.ERROR)
            else:
                self.message_user(request, f"Rolled {flag.key} back to change {change_id}; "
                                           f"it is now version {restored.version}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:flags_flag_history", args=[flag.pk]))

    def explain_view(self, request, object_id):
        flag, redirect = self._flag_or_redirect(request, object_id)
        if redirect:
            return redirect
        if not self.has_view_or_change_permission(request, flag):
            raise PermissionDenied
        form = ExplainForm(request.GET or None)
        result = explain(flag, form.evaluation_context()) if form.is_bound and form.is_valid() else None
        context = {
            **self.admin_site.each_context(request),
            "title": f"Explain {flag.key}", "opts": self.opts, "object": flag, "form": form, "result": result,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/flags/flag/explain.html", context)


# --- Scheduled changes ----------------------------------------------------------------------------


def preview_changes(flag: Flag, changes: Any) -> list[str]:
    """Problems ``changes`` would cause if applied to ``flag`` now (as flag_update applies them)."""
    if not isinstance(changes, dict) or not changes:
        return ['Enter a JSON object such as {"percentage": 50} or {"enabled": false}.']
    definition = definition_of(flag)
    changes = dict(changes)
    percentage = changes.pop("percentage", None)
    unknown = sorted(set(changes) - (set(definition) - {"key"}))
    if unknown:
        return [f"Unknown field(s): {', '.join(unknown)}."]
    definition.update(changes)
    if percentage is not None:
        rule = next((rule for rule in definition["rules"] if rule["kind"] == FlagRule.Kind.PERCENTAGE), None)
        if rule is None:
            definition["rules"].append({"kind": FlagRule.Kind.PERCENTAGE, "params": {"percentage": percentage}})
        else:
            rule["params"] = {**rule["params"], "percentage": percentage}
    try:
        validate_definition(definition)
    except DefinitionError as exc:
        return [f"{error['field']}: {error['message']}" for error in exc.errors]
    except TypeError:
        # validate_definition looks lists up in sets (a rule "kind" or "operator" given as a list);
        # the API's serializer and the rule inline never let such values through, free JSON here does.
        return ["A value has the wrong type (a list or object where text is expected)."]
    return []


class ScheduledFlagChangeForm(StorableJSONMixin, forms.ModelForm):
    class Meta:
        model = ScheduledFlagChange
        fields = ["flag", "run_at", "changes", "reason"]

    def clean(self):
        cleaned = super().clean()
        # Checked against the flag as it is now, so typos surface today rather than at 09:00.
        if cleaned.get("flag") is not None and "changes" in cleaned:
            for problem in preview_changes(cleaned["flag"], cleaned["changes"]):
                self.add_error("changes", problem)
        return cleaned


def scheduled_status(change: ScheduledFlagChange) -> str:
    """pending, applied or errored."""
    return "applied" if change.applied_at else "errored" if change.error else "pending"


class ScheduledStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"
    queries = {
        "pending": Q(applied_at__isnull=True, error=""),
        "applied": Q(applied_at__isnull=False),
        "errored": Q(applied_at__isnull=True) & ~Q(error=""),
    }

    def lookups(self, request, model_admin):
        return [(name, name.capitalize()) for name in self.queries]

    def queryset(self, request, queryset):
        query = self.queries.get(self.value() or "")
        return queryset.filter(query) if query is not None else queryset


@admin.register(ScheduledFlagChange)
class ScheduledFlagChangeAdmin(admin.ModelAdmin):
    form = ScheduledFlagChangeForm
    list_display = ("flag", "run_at", "changes", "status", "applied_at", "created_by", "error")
    list_filter = (ScheduledStatusFilter, "run_at")
    search_fields = ("flag__key", "reason")
    autocomplete_fields = ("flag",)
    readonly_fields = ("created_by", "applied_at", "error")
    actions = ["apply_now"]
    formfield_overrides = {models.JSONField: JSON_WIDGET}

    @admin.display(description="status")
    def status(self, obj: ScheduledFlagChange) -> str:
        return scheduled_status(obj)

    # Applied and errored rows are a record; only pending ones may still be edited or withdrawn.
    def has_change_permission(self, request, obj=None) -> bool:
        return super().has_change_permission(request, obj) and (obj is None or scheduled_status(obj) == "pending")

    def has_delete_permission(self, request, obj=None) -> bool:
        return super().has_delete_permission(request, obj) and (obj is None or scheduled_status(obj) == "pending")

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.action(description="Apply selected pending changes now", permissions=["change"])
    def apply_now(self, request, queryset) -> None:
        now = timezone.now()
        queryset.filter(applied_at__isnull=True, error="", run_at__gt=now).update(run_at=now)
        # The same service beat runs: anything else already due is applied too, as beat would.
        applied = scheduled_changes_apply(now=now)
        self.message_user(request, f"Applied {applied} due change(s); failures are listed as errored.",
                          messages.SUCCESS)


# --- The audit trail ------------------------------------------------------------------------------


@admin.register(FlagChange)
class FlagChangeAdmin(ReadOnlyAdmin):  # the audit trail is written by the flag services only
    list_display = ("changed_at", "flag_key", "action", "version", "actor", "reason")
    list_filter = ("action",)
    search_fields = ("flag_key", "actor", "reason")
    fields = ("flag_key", "version", "action", "actor", "changed_at", "reason", "diff_display", "before_display",
              "after_display")
    readonly_fields = fields

    @admin.display(description="diff")
    def diff_display(self, obj: FlagChange) -> str:
        return format_html("<pre>{}</pre>", pretty(obj.diff))

    @admin.display(description="before")
    def before_display(self, obj: FlagChange) -> str:
        return format_html("<pre>{}</pre>", pretty(obj.before))

    @admin.display(description="after")
    def after_display(self, obj: FlagChange) -> str:
        return format_html("<pre>{}</pre>", pretty(obj.after))
