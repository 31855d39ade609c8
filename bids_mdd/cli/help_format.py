"""The help formatter of every bids_mdd command: argparse's defaults, said once."""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" only where the help does not already say its default, and never for
    an unset (None) or off (False) default, which argparse's own formatter prints as
    "(default: None)" after every option."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)
