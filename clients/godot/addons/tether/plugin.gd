@tool
extends EditorPlugin
## Registers the TetherLive node in the Create Node dialog.


func _enter_tree() -> void:
	add_custom_type("TetherLive", "Node", preload("tether_live.gd"), preload("icon.svg"))


func _exit_tree() -> void:
	remove_custom_type("TetherLive")
