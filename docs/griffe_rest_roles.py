"""A griffe extension for the API reference: docstrings cite objects with reStructuredText roles
(``:class:`Spectrum```), which Markdown would show verbatim; this renders each as inline code (``Spectrum``)."""

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj):`~?([^`]+)`")


class RestRoles(griffe.Extension):
    """Replace ``:role:`name``` by ```name``` in every docstring."""

    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(r"`\1`", obj.docstring.value)
