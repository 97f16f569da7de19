"""Add-on preferences: how to reach the Tether server."""

from __future__ import annotations

import bpy

from .connection import ClientConfig

__all__ = ["CLASSES", "TetherPreferences", "client_config", "draw_preferences"]

# The add-on's package name: "tether_blender" when imported directly (tests, scripts),
# "bl_ext.<repository>.tether_blender" when installed as an extension. Preferences are
# registered and looked up under this name.
ADDON_ID = __package__


class TetherPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    address: bpy.props.StringProperty(
        name="Server",
        description="Address of the Tether server, host:port",
        default="127.0.0.1:50051",
    )
    token: bpy.props.StringProperty(
        name="Token",
        description="Access token, if the server was started with --token",
        subtype="PASSWORD",
    )
    use_tls: bpy.props.BoolProperty(
        name="TLS",
        description="Connect with TLS (required by servers reached over a network)",
        default=False,
    )
    tls_root_certificate: bpy.props.StringProperty(
        name="Root Certificate",
        description="PEM file of the certificate authority to trust; empty = the system's",
        subtype="FILE_PATH",
    )

    def draw(self, context: bpy.types.Context) -> None:
        draw_preferences(self.layout, self)


def draw_preferences(layout: bpy.types.UILayout, prefs: TetherPreferences) -> None:
    layout.use_property_split = True
    layout.prop(prefs, "address")
    layout.prop(prefs, "token")
    layout.prop(prefs, "use_tls")
    row = layout.row()
    row.enabled = prefs.use_tls
    row.prop(prefs, "tls_root_certificate")
    if not bpy.app.online_access:
        layout.label(
            text="Online access is off: only a server on this computer can be reached",
            icon="INFO",
        )


def client_config(context: bpy.types.Context) -> ClientConfig:
    """The connection settings. Without registered preferences (the add-on was registered
    by a script rather than enabled in Preferences) the defaults apply."""
    addon = context.preferences.addons.get(ADDON_ID)
    if addon is None or addon.preferences is None:
        return ClientConfig(
            address="127.0.0.1:50051", token="", use_tls=False, tls_root_certificate=""
        )
    prefs = addon.preferences
    certificate = bpy.path.abspath(prefs.tls_root_certificate) if prefs.tls_root_certificate else ""
    return ClientConfig(
        address=prefs.address,
        token=prefs.token,
        use_tls=prefs.use_tls,
        tls_root_certificate=certificate,
    )


CLASSES = (TetherPreferences,)
