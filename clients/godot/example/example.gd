extends Node3D
## Orbits the camera around a small scene while TetherLive streams it to the bridge; the
## label shows the frame answered, the lag and the frames dropped, or the last error.

@export var orbit_seconds: float = 20.0
@export var orbit_radius: float = 5.0

var _angle := 0.0
var _results := 0
var _window_start := 0.0

@onready var _camera: Camera3D = $Camera
@onready var _live: TetherLive = $TetherLive
@onready var _stats: Label = $Overlay/Stats


func _ready() -> void:
	_live.connected.connect(_on_connected)
	_live.disconnected.connect(_on_disconnected)
	_live.frame_received.connect(_on_frame_received)
	_live.error_received.connect(_on_error_received)
	_stats.text = "connecting to %s" % _live.bridge_url


func _process(delta: float) -> void:
	_angle += TAU * delta / orbit_seconds
	_camera.position = Vector3(sin(_angle), 0.3, cos(_angle)) * orbit_radius
	_camera.look_at(Vector3(0.0, 0.5, 0.0))


func _unhandled_input(event: InputEvent) -> void:
	# Space: a new seed, to see the config change mid-session.
	if event.is_action_pressed("ui_accept"):
		_live.noise_seed += 1


func _on_connected() -> void:
	_stats.text = "connected"
	_window_start = Time.get_ticks_msec() / 1000.0


func _on_disconnected(code: int, reason: String) -> void:
	_stats.text = "disconnected (%d %s): is `tether bridge` running?" % [code, reason]


func _on_frame_received(frame_id: int, _texture: Texture2D, lag_ms: float, dropped: int) -> void:
	_results += 1
	var elapsed := Time.get_ticks_msec() / 1000.0 - _window_start
	var fps := _results / elapsed if elapsed > 0.0 else 0.0
	_stats.text = (
		"frame %d   %.1f fps   lag %.0f ms   dropped %d   seed %d"
		% [frame_id, fps, lag_ms, dropped, _live.noise_seed]
	)


func _on_error_received(frame_id: int, message: String) -> void:
	_stats.text = "error (frame %d): %s" % [frame_id, message]
