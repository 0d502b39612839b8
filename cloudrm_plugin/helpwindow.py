"""The Help button's window: the user guide and the Processing algorithms' help, from files
shipped inside the plugin (``help/user_guide.html``, ``help/algorithms.yaml``), so it works
offline and always matches the installed version."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Any

from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QPushButton, QTextBrowser, QVBoxLayout, QWidget

HELP_DIR = Path(__file__).resolve().parent / "help"
USER_GUIDE = HELP_DIR / "user_guide.html"
ALGORITHM_HELP = HELP_DIR / "algorithms.yaml"


def algorithm_help_html() -> str:
    """The algorithms' help (display name, summary, every parameter) as an HTML fragment."""
    import yaml

    texts: dict[str, Any] = yaml.safe_load(ALGORITHM_HELP.read_text(encoding="utf-8")) or {}
    parts = ['<h2 id="algorithms">Processing algorithms</h2>']
    for name, entry in texts.items():
        if not isinstance(entry, dict):
            continue
        parts.append(f'<h3 id="alg-{html.escape(name)}">{html.escape(str(entry.get("display_name", name)))} '
                     f"(<code>cloudrm:{html.escape(name)}</code>)</h3>")
        if entry.get("short_help"):
            parts.append(f"<p>{html.escape(str(entry['short_help']))}</p>")
        params = entry.get("parameters") or {}
        if params:
            rows = "".join(f"<tr><td><code>{html.escape(str(k))}</code></td><td>{html.escape(str(v))}</td></tr>"
                           for k, v in params.items())
            parts.append(f'<table border="1" cellpadding="4" cellspacing="0">{rows}</table>')
    return "\n".join(parts)


def help_html() -> str:
    """The whole help page: the user guide followed by the algorithms' help."""
    guide = USER_GUIDE.read_text(encoding="utf-8")
    try:
        algorithms = algorithm_help_html()
    except Exception as exc:  # a broken help file must not break the Help button
        algorithms = f"<p>(the algorithms' help could not be read: {html.escape(str(exc))})</p>"
    marker = "<!-- ALGORITHMS -->"
    return guide.replace(marker, algorithms) if marker in guide else guide + algorithms


def write_help_file(folder: str | Path | None = None) -> Path:
    """The help page as a standalone HTML file (for a web browser); returns its path."""
    folder = Path(folder or tempfile.mkdtemp(prefix="cloudrm_help_"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cloudrm_help.html"
    path.write_text(help_html(), encoding="utf-8")
    return path


class HelpWindow(QDialog):
    """A non-modal window showing :func:`help_html`, with "Open in web browser"."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(self.tr("cloudrm – Help"))
        self.resize(760, 640)
        layout = QVBoxLayout(self)
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(False)
        self.browser.setOpenLinks(True)
        self.browser.setSearchPaths([str(HELP_DIR)])
        self.browser.setHtml(help_html())
        layout.addWidget(self.browser)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        self.browser_button = QPushButton(self.tr("Open in web browser"))
        self.browser_button.setToolTip(self.tr("The same page as a file in your web browser"))
        buttons.addButton(self.browser_button, QDialogButtonBox.ActionRole)
        buttons.rejected.connect(self.close)
        self.browser_button.clicked.connect(self.open_in_browser)
        layout.addWidget(buttons)

    def open_in_browser(self) -> bool:
        return QDesktopServices.openUrl(QUrl.fromLocalFile(str(write_help_file())))
