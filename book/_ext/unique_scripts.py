"""Sphinx extension: emit each script once.

Sphinx 7.4 writes sphinx-thebe's inline script twice, which raises "Identifier
'THEBE_JS_URL' has already been declared" in every reader's console.
"""


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (
            script.filename or "",
            script.priority,
            tuple(sorted(script.attributes.items())),
        )
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
