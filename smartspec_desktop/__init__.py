"""SmartSpec Desktop: a launcher for OpenCode servers routed through the SmartSpecPro gateway."""

__version__ = "0.1.0"

APP_NAME = "smartspec-desktop"
