"""The console's words, Dutch first with English beside them, and how a page picks one.

A page is Dutch unless the person chose English: ``?lang=en`` on any console page sets the
``__Host-gw_console_lang`` cookie (``?lang=nl`` sets it back). Templates call ``t("key")``; a
key missing in either language is a test failure, never a blank on the page.
"""

from __future__ import annotations

from typing import Final, Literal

from gateway.types import Scope

__all__ = ["LANGUAGES", "LANG_COOKIE", "MESSAGES", "Lang", "chosen_language", "translate"]

Lang = Literal["nl", "en"]
LANGUAGES: Final[tuple[Lang, ...]] = ("nl", "en")
LANG_COOKIE: Final = "__Host-gw_console_lang"

#: key -> (Dutch, English)
MESSAGES: Final[dict[str, tuple[str, str]]] = {
    "console": ("Beveiligingsconsole", "Security console"),
    "skip": ("Naar de inhoud", "Skip to content"),
    "nav": ("Hoofdmenu", "Main menu"),
    "home": ("Start", "Home"),
    "switch_language": ("English", "Nederlands"),
    "switch_language_label": ("Switch to English", "Schakel naar Nederlands"),
    "logged_in_as": ("Ingelogd als", "Logged in as"),
    "roles": ("Rollen", "Roles"),
    "tenant": ("Organisatie", "Tenant"),
    "logout": ("Uitloggen", "Log out"),
    "no_pages": (
        "Voor uw rol zijn er geen consolepagina's.",
        "There are no console pages for your role.",
    ),
    "page_audit": ("Auditlog doorzoeken", "Search the audit log"),
    "page_audit_text": (
        "Gebeurtenissen zoeken, bekijken, doorklikken en exporteren.",
        "Find, open, pivot on and export events.",
    ),
    "page_holds": ("Bewaarplichten (holds)", "Holds"),
    "page_holds_text": (
        "Gebeurtenissen voor een incident tegen verwijdering beschermen, en weer vrijgeven.",
        "Protect events from deletion for an incident, and release them.",
    ),
    "page_sessions": ("Sessies beëindigen", "Revoke sessions"),
    "page_sessions_text": (
        "Alle sessies van één persoon beëindigen (incidentrespons).",
        "End every session of one person (incident response).",
    ),
    "page_subjects": ("Inzageverzoek (export)", "Subject access export"),
    "page_subjects_text": (
        "Alle gebeurtenissen over één persoon exporteren voor een inzageverzoek.",
        "Export every event about one person for an access request.",
    ),
    "page_policies": ("Beleid beoordelen", "Policy review"),
    "page_policies_text": (
        "Rechtenmatrix, gegevenscategorieën, verschillen en bevindingen.",
        "Permission matrix, data categories, differences and findings.",
    ),
    "page_stats": ("Statistieken", "Statistics"),
    "page_stats_text": (
        "Geaggregeerde aantallen, kleine aantallen onderdrukt.",
        "Aggregated counts, small counts suppressed.",
    ),
    # --- audit search
    "filters": ("Filters", "Filters"),
    "f_since": ("Vanaf (ISO 8601, met zone)", "Since (ISO 8601, with zone)"),
    "f_until": ("Tot (ISO 8601, met zone)", "Until (ISO 8601, with zone)"),
    "f_subject": ("Persoon (user.id of doelpersoon)", "Person (user.id or target)"),
    "f_target": ("Doelpersoon (user.target.id)", "Target person (user.target.id)"),
    "f_tenant": ("Organisatie", "Tenant"),
    "f_source_ip": ("IP-adres of CIDR", "IP address or CIDR"),
    "f_category": ("Categorie", "Category"),
    "f_action": ("Actie", "Action"),
    "f_outcome": ("Uitkomst", "Outcome"),
    "f_status": ("HTTP-status", "HTTP status"),
    "f_request_id": ("Request-id", "Request id"),
    "f_rule": ("Beleidsregel", "Policy rule"),
    "f_q": ("Vrije tekst", "Free text"),
    "f_order": ("Volgorde", "Order"),
    "f_size": ("Per pagina", "Per page"),
    "any": ("(alle)", "(any)"),
    "newest_first": ("Nieuwste eerst", "Newest first"),
    "oldest_first": ("Oudste eerst", "Oldest first"),
    "search": ("Zoeken", "Search"),
    "reset": ("Filters wissen", "Clear filters"),
    "results": ("Resultaten", "Results"),
    "results_count": ("gebeurtenissen gevonden", "events found"),
    "at_least": ("ten minste", "at least"),
    "no_results": ("Geen gebeurtenissen gevonden.", "No events found."),
    "next_page": ("Volgende pagina", "Next page"),
    "first_page": ("Eerste pagina", "First page"),
    "export_csv": ("Exporteer resultaat (CSV)", "Export result (CSV)"),
    "export_json": ("Exporteer resultaat (JSON)", "Export result (JSON)"),
    "export_cap": (
        "Een export bevat ten hoogste {n} gebeurtenissen.",
        "An export holds at most {n} events.",
    ),
    "col_time": ("Tijd (UTC)", "Time (UTC)"),
    "col_action": ("Actie", "Action"),
    "col_outcome": ("Uitkomst", "Outcome"),
    "col_user": ("Wie", "Who"),
    "col_tenant": ("Organisatie", "Tenant"),
    "col_ip": ("IP", "IP"),
    "col_path": ("Pad", "Path"),
    "col_status": ("Status", "Status"),
    "open": ("Openen", "Open"),
    "open_event": ("Gebeurtenis openen", "Open event"),
    "event": ("Gebeurtenis", "Event"),
    "field": ("Veld", "Field"),
    "value": ("Waarde", "Value"),
    "pivot": ("Doorklikken", "Pivot"),
    "pivot_subject": ("Zelfde persoon", "Same person"),
    "pivot_ip": ("Zelfde IP-adres", "Same IP address"),
    "pivot_request": ("Zelfde request-id", "Same request id"),
    "back_to_search": ("Terug naar zoeken", "Back to search"),
    # --- holds
    "holds_active": ("Actieve holds", "Active holds"),
    "holds_released": ("Vrijgegeven holds", "Released holds"),
    "no_holds": ("Geen.", "None."),
    "hold_place": ("Hold plaatsen", "Place a hold"),
    "h_incident": ("Incidentnummer", "Incident id"),
    "h_reason": ("Reden", "Reason"),
    "h_scope": ("Bereik (vul er ten minste één in)", "Scope (give at least one)"),
    "h_user_ids": ("Personen (user.id, één per regel)", "People (user.id, one per line)"),
    "h_source_ips": (
        "IP-adressen of CIDR's (één per regel)",
        "IP addresses or CIDRs (one per line)",
    ),
    "h_organization_ids": ("Organisaties (één per regel)", "Tenants (one per line)"),
    "h_categories": ("Categorieën", "Categories"),
    "h_since": ("Vanaf (ISO 8601, met zone)", "Since (ISO 8601, with zone)"),
    "h_until": ("Tot (ISO 8601, met zone)", "Until (ISO 8601, with zone)"),
    "h_review": ("Herzien op (datum, optioneel)", "Review on (date, optional)"),
    "h_placed": ("Geplaatst", "Placed"),
    "h_by": ("door", "by"),
    "h_released": ("Vrijgegeven", "Released"),
    "h_release_reason": ("Reden van vrijgeven", "Reason for release"),
    "h_release": ("Vrijgeven", "Release"),
    "h_continue": ("Verder naar bevestigen", "Continue to confirm"),
    "h_confirm_title": ("Hold bevestigen", "Confirm the hold"),
    "h_covers": ("Deze hold beschermt nu", "This hold now protects"),
    "h_events": ("gebeurtenissen", "events"),
    "h_covers_more": (
        "en alle gebeurtenissen die later binnen het bereik vallen.",
        "and every event that falls within the scope later.",
    ),
    "h_confirm": ("Hold plaatsen", "Place the hold"),
    "h_placed_ok": ("De hold is geplaatst.", "The hold was placed."),
    "h_released_ok": ("De hold is vrijgegeven.", "The hold was released."),
    "cancel": ("Annuleren", "Cancel"),
    "h_list_only": (
        "U mag holds bekijken; plaatsen en vrijgeven doet een incident responder.",
        "You may view holds; an incident responder places and releases them.",
    ),
    # --- sessions
    "s_user": ("Persoon (user.id: issuer|subject)", "Person (user.id: issuer|subject)"),
    "s_continue": ("Verder naar bevestigen", "Continue to confirm"),
    "s_confirm_title": ("Sessies beëindigen bevestigen", "Confirm revoking sessions"),
    "s_confirm_text": (
        "Alle sessies van deze persoon worden nu beëindigd. Zij moeten opnieuw inloggen.",
        "Every session of this person ends now. They will have to log in again.",
    ),
    "s_recent_logins": ("Aanmeldingen in de laatste 24 uur", "Logins in the last 24 hours"),
    "s_confirm": ("Alle sessies beëindigen", "Revoke all sessions"),
    "s_unavailable": (
        "De intrekking is NIET vastgelegd: de opslag van ingetrokken sessies is nu niet "
        "bereikbaar. De sessies van deze persoon kunnen nog werken. Probeer het opnieuw.",
        "The revocation was NOT recorded: the revocation store cannot be reached right now. "
        "This person's sessions may still work. Please try again.",
    ),
    "s_retry": ("Opnieuw proberen", "Try again"),
    "s_revoked_ok": ("Alle sessies zijn beëindigd van", "Every session was revoked of"),
    # --- subject export
    "x_subject": ("Persoon (user.id)", "Person (user.id)"),
    "x_format": ("Formaat", "Format"),
    "x_download": ("Export downloaden", "Download export"),
    "x_tenant_only": (
        "U exporteert alleen gebeurtenissen van uw eigen organisatie.",
        "You export only your own tenant's events.",
    ),
    # --- statistics
    "st_rows": ("Rijen", "Rows"),
    "st_column": ("Kolom", "Column"),
    "st_show": ("Tonen", "Show"),
    "st_total": ("Totaal", "Total"),
    "st_suppressed": (
        "Aantallen onder {n} staan als \u201c<{n}\u201d; enkele andere cellen zijn daarom ook "
        "verborgen, zodat niets terug te rekenen is.",
        "Counts below {n} are shown as \u201c<{n}\u201d; some other cells are hidden too, so "
        "that nothing can be worked out from the rest.",
    ),
    "st_empty": ("Geen gebeurtenissen in deze periode.", "No events in this period."),
    # --- policy review
    "p_matrix": ("Rechtenmatrix", "Permission matrix"),
    "p_categories": ("Gegevenscategorieën", "Data categories"),
    "p_diff": ("Verschil met eerdere versie", "Difference with an earlier version"),
    "p_lint": ("Bevindingen", "Findings"),
    "p_version": ("Beleid in werking", "Policy in force"),
    "p_family": ("Familie", "Family"),
    "p_method": ("Methode", "Method"),
    "p_route": ("Route", "Route"),
    "p_cats": ("Categorieën", "Categories"),
    "p_others": ("Gegevens van anderen", "Others' data"),
    "p_category": ("Categorie", "Category"),
    "p_reached_by": ("Bereikbaar voor", "Reachable by"),
    "p_nobody": ("niemand", "nobody"),
    "p_against": ("Vergelijk met", "Compare with"),
    "p_compare": ("Vergelijken", "Compare"),
    "p_no_versions": (
        "Geen eerdere versies bekend (geen git-geschiedenis, geen herladingen).",
        "No earlier versions known (no git history, no reloads).",
    ),
    "p_no_findings": ("Geen bevindingen.", "No findings."),
    "cat_a": ("a) account- en contactgegevens", "a) account and contact data"),
    "cat_b": ("b) gebruik van het platform", "b) platform usage"),
    "cat_c": ("c) communicatie", "c) communications"),
    "cat_d": ("d) technische gegevens", "d) technical data"),
    "cat_e": ("e) beeldmateriaal", "e) images"),
    "cat_f": ("f) cookiegegevens", "f) cookie data"),
    # --- errors
    "error": ("Fout", "Error"),
    "error_bad_form": ("Controleer het formulier", "Check the form"),
    "error_csrf_rejected": (
        "Het formulier is verlopen of kwam niet van deze console. Laad de pagina opnieuw.",
        "The form expired or did not come from this console. Reload the page.",
    ),
    "error_not_permitted": ("Dit mag u niet.", "You may not do this."),
    "error_not_found": ("Niet gevonden.", "Not found."),
    "error_conflict": ("Dit is intussen al gebeurd.", "This already happened meanwhile."),
    "error_store_unavailable": (
        "De opslag is niet bereikbaar. Probeer het later opnieuw.",
        "The store cannot be reached. Please try again later.",
    ),
    "error_console_error": ("Er ging iets mis.", "Something went wrong."),
    "reference": ("Referentie", "Reference"),
}


def translate(lang: Lang, key: str, **values: object) -> str:
    """The text of ``key`` in ``lang`` (KeyError for an unknown key: a bug in a template)."""
    text = MESSAGES[key][0 if lang == "nl" else 1]
    return text.format(**values) if values else text


def chosen_language(scope: Scope, query_lang: str | None) -> tuple[Lang, bool]:
    """(language, whether to set the cookie): ``?lang=`` wins, then the cookie, then Dutch."""
    if query_lang in LANGUAGES:
        return ("en" if query_lang == "en" else "nl"), True
    for name, value in scope.get("headers", ()):
        if name != b"cookie":
            continue
        for part in bytes(value).decode("latin-1").split(";"):
            key, _, found = part.strip().partition("=")
            if key == LANG_COOKIE and found == "en":
                return "en", False
    return "nl", False
