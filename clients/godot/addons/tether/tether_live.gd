@icon("res://addons/tether/icon.svg")
class_name TetherLive
extends Node
## Streams a camera's colour, linear depth and view-space normals to a Tether bridge
## (`tether bridge`) and shows the stylised results in a TextureRect.
##
## The wire format is the one documented in protos/bridge.md; tests/test_godot.py holds the
## constants and offsets below to the bridge's codec. Needs Godot 4.3+ with the Forward+
## renderer. `class_name` is the node's one registration: it lists TetherLive in the Create
## Node dialog, with no plugin to enable.

## Emitted when the bridge accepted the WebSocket connection.
signal connected
## Emitted when the connection closed (or could not be opened).
signal disconnected(code: int, reason: String)
## Emitted for every result: the frame it answers, the texture now shown, the lag from the
## frame reaching the bridge to its result leaving it, and frames dropped so far.
signal frame_received(frame_id: int, texture: Texture2D, lag_ms: float, dropped: int)
## Emitted for every error the bridge or the server reports; frame_id 0: not about a frame.
signal error_received(frame_id: int, message: String)

# Wire format (little-endian); tests/test_godot.py holds these to the bridge's.
const FRAME_MAGIC := 0x31464C54  # "TLF1"
const RESULT_MAGIC := 0x31524C54  # "TLR1"
const FRAME_HEADER_SIZE := 12  # magic, frame id, buffer count
const BUFFER_DESCRIPTOR_SIZE := 20  # width, height, channels, pixel type, byte length
const RESULT_HEADER_SIZE := 40
const PIXEL_U8 := 1
const PIXEL_F32 := 3
const FORMAT_PNG := 1
const FORMAT_JPEG := 2
const FORMAT_WEBP := 3
const FORMAT_RAW := 4
# Render layers (1-based) of the full-screen data quads: only the data cameras see them.
const DEPTH_LAYER := 19
const NORMAL_LAYER := 20
const DATA_LAYERS := (1 << (DEPTH_LAYER - 1)) | (1 << (NORMAL_LAYER - 1))

const DATA_SHADER := preload("tether_data.gdshader")

## The bridge's host endpoint.
@export var bridge_url: String = "ws://127.0.0.1:8765/live"
## The bridge's own token, when it has one (`tether bridge --bridge-token`); empty: the
## TETHER_BRIDGE_TOKEN environment variable, if set. Sent in the handshake's Authorization
## header (a web export cannot set headers: add ?token=... to bridge_url instead).
@export var bridge_token: String = ""
## The camera to follow; empty: the viewport's current camera.
@export var camera: Camera3D
## Where results are shown; may be empty (use frame_received instead).
@export var result_rect: TextureRect
## Size of the frames sent (multiples of 8); results come back at this size.
@export var capture_size: Vector2i = Vector2i(256, 256)
## Frames sent per second, at most; a frame waits while the previous one is still being
## written to the socket.
@export_range(0.5, 60.0, 0.5) var send_rate_hz: float = 10.0
## Connect when the node enters the tree.
@export var autostart: bool = true

@export_group("Generation")
@export_multiline var prompt: String = "a watercolour painting":
	set(value):
		prompt = value
		_config_changed = true
@export var negative_prompt: String = "":
	set(value):
		negative_prompt = value
		_config_changed = true
@export_range(1, 4) var steps: int = 2:
	set(value):
		steps = value
		_config_changed = true
@export_range(0.05, 1.0, 0.05) var strength: float = 0.5:
	set(value):
		strength = value
		_config_changed = true
@export var noise_seed: int = 0:
	set(value):
		noise_seed = value
		_config_changed = true
@export_range(0.0, 2.0, 0.05) var depth_weight: float = 0.8:
	set(value):
		depth_weight = value
		_config_changed = true
@export_range(0.0, 2.0, 0.05) var normal_weight: float = 0.5:
	set(value):
		normal_weight = value
		_config_changed = true
## "raw" costs nothing to encode or decode (best on one machine); "jpeg" is 10x smaller.
@export_enum("raw", "jpeg") var output_format: String = "raw":
	set(value):
		output_format = value
		_config_changed = true
## > 0: a frame that differs from the last one by less (mean, 0..1) reuses its result.
@export_range(0.0, 0.1, 0.001) var reuse_threshold: float = 0.0:
	set(value):
		reuse_threshold = value
		_config_changed = true
## Control model names as the server lists them (`tether models`).
@export var depth_model: String = "depth"
@export var normal_model: String = "normal"

var _socket: WebSocketPeer
var _open := false
var _config_changed := true
var _config_far := 0.0
var _next_frame_id := 1
var _since_sent := 0.0
var _capturing := false
var _texture: ImageTexture
var _colour_viewport: SubViewport
var _depth_viewport: SubViewport
var _normal_viewport: SubViewport
var _cameras: Array[Camera3D] = []
var _camera_layers: Array[int] = []  # the one data layer each follower sees besides the scene
var _data_materials: Array[ShaderMaterial] = []


func _ready() -> void:
	if capture_size.x % 8 != 0 or capture_size.y % 8 != 0:
		push_warning("TetherLive: capture_size must be multiples of 8; rounding down")
		capture_size.x = maxi(8, capture_size.x - capture_size.x % 8)
		capture_size.y = maxi(8, capture_size.y - capture_size.y % 8)
	_colour_viewport = _add_viewport(false, 0)
	_depth_viewport = _add_data_pass(0, DEPTH_LAYER)
	_normal_viewport = _add_data_pass(1, NORMAL_LAYER)
	if autostart:
		connect_to_bridge()


## Opens the WebSocket to bridge_url; the config is sent as soon as it is open.
func connect_to_bridge() -> void:
	_socket = WebSocketPeer.new()
	# Frames are larger than Godot's 64 KiB default buffers: 256x256 is 1.1 MiB.
	var frame_bytes := capture_size.x * capture_size.y * (3 + 4 + 12)
	_socket.outbound_buffer_size = frame_bytes * 2 + 4096
	_socket.inbound_buffer_size = capture_size.x * capture_size.y * 3 * 4 + 4096
	var token := bridge_token
	if token.is_empty():
		token = OS.get_environment("TETHER_BRIDGE_TOKEN")
	if not token.is_empty():
		_socket.handshake_headers = PackedStringArray(["Authorization: Bearer " + token])
	var status := _socket.connect_to_url(bridge_url)
	if status != OK:
		_socket = null
		disconnected.emit(0, "cannot connect to %s (error %d)" % [bridge_url, status])


## Closes the connection; the bridge ends the session on the server.
func disconnect_from_bridge() -> void:
	if _socket != null:
		_socket.close()


func _process(delta: float) -> void:
	if _socket == null:
		return
	_socket.poll()
	var state := _socket.get_ready_state()
	if state == WebSocketPeer.STATE_OPEN:
		if not _open:
			_open = true
			_config_changed = true
			connected.emit()
		_receive()
		var source := _source_camera()
		if source != null and (_config_changed or source.far != _config_far):
			_send_config(source.far)
		_since_sent += delta
		var due := _since_sent >= 1.0 / send_rate_hz
		if due and not _capturing and _socket.get_current_outbound_buffered_amount() == 0:
			_since_sent = 0.0
			_capture_and_send()
	elif state == WebSocketPeer.STATE_CLOSED:
		_open = false
		var code := _socket.get_close_code()
		var reason := _socket.get_close_reason()
		_socket = null
		disconnected.emit(code, reason)


func _source_camera() -> Camera3D:
	return camera if camera != null else get_viewport().get_camera_3d()


func _send_config(far: float) -> void:
	_config_changed = false
	_config_far = far
	var depth_unit := {
		"model": depth_model,
		"weight": depth_weight,
		# Linear view depth; the far plane marks where there is no geometry.
		"preprocessor": {"type": "depth", "buffer": "linear", "far": far},
	}
	var normal_unit := {
		"model": normal_model,
		"weight": normal_weight,
		"preprocessor": {"type": "normal", "space": "view"},
	}
	var config := {
		"type": "config",
		"prompt": prompt,
		"negative_prompt": negative_prompt,
		"steps": steps,
		"strength": strength,
		"seed": noise_seed,
		"output_format": output_format,
		"reuse_threshold": reuse_threshold,
		"controls": [depth_unit, normal_unit],
	}
	_socket.send_text(JSON.stringify(config))


## Renders the three SubViewports once from the source camera, then sends them as a frame.
func _capture_and_send() -> void:
	var source := _source_camera()
	if source == null:
		return
	_capturing = true
	# The game's own view must not show the data quads.
	source.cull_mask &= ~DATA_LAYERS
	for i in _cameras.size():
		var follower := _cameras[i]
		follower.cull_mask = source.cull_mask | _camera_layers[i]
		follower.global_transform = source.global_transform
		follower.projection = source.projection
		follower.fov = source.fov
		follower.size = source.size
		follower.near = source.near
		follower.far = source.far
		follower.keep_aspect = source.keep_aspect
	for material in _data_materials:
		material.set_shader_parameter("far_plane", source.far)
	for viewport in [_colour_viewport, _depth_viewport, _normal_viewport]:
		viewport.render_target_update_mode = SubViewport.UPDATE_ONCE
	await RenderingServer.frame_post_draw
	_capturing = false
	if not _open:
		return
	var colour := _colour_viewport.get_texture().get_image()
	colour.convert(Image.FORMAT_RGB8)
	var depth := _depth_viewport.get_texture().get_image()
	depth.convert(Image.FORMAT_RF)  # red only, 32-bit float
	var normals := _normal_viewport.get_texture().get_image()
	normals.convert(Image.FORMAT_RGBF)  # 32-bit floats
	var frame_images: Array[Image] = [colour, depth, normals]
	var frame := _pack_frame(_next_frame_id, frame_images)
	if not frame.is_empty():
		_socket.send(frame)
		_next_frame_id += 1


## A frame message: header, one 20-byte descriptor per image, then the images' bytes.
## Images must be RGB8 (sent as 3 x U8), RF (1 x F32) or RGBF (3 x F32).
func _pack_frame(frame_id: int, frame_images: Array[Image]) -> PackedByteArray:
	var message := PackedByteArray()
	message.resize(FRAME_HEADER_SIZE + BUFFER_DESCRIPTOR_SIZE * frame_images.size())
	message.encode_u32(0, FRAME_MAGIC)
	message.encode_u32(4, frame_id)
	message.encode_u32(8, frame_images.size())
	var payloads: Array[PackedByteArray] = []
	for i in frame_images.size():
		var image := frame_images[i]
		var channels: int
		var pixel_type: int
		match image.get_format():
			Image.FORMAT_RGB8:
				channels = 3
				pixel_type = PIXEL_U8
			Image.FORMAT_RF:
				channels = 1
				pixel_type = PIXEL_F32
			Image.FORMAT_RGBF:
				channels = 3
				pixel_type = PIXEL_F32
			_:
				push_error("TetherLive: cannot send image format %d" % image.get_format())
				return PackedByteArray()
		var data := image.get_data()
		var base := FRAME_HEADER_SIZE + BUFFER_DESCRIPTOR_SIZE * i
		message.encode_u32(base, image.get_width())
		message.encode_u32(base + 4, image.get_height())
		message.encode_u32(base + 8, channels)
		message.encode_u32(base + 12, pixel_type)
		message.encode_u32(base + 16, data.size())
		payloads.append(data)
	for data in payloads:
		message.append_array(data)
	return message


func _receive() -> void:
	while _socket.get_available_packet_count() > 0:
		var packet := _socket.get_packet()
		if _socket.was_string_packet():
			_on_text(packet.get_string_from_utf8())
		else:
			_on_result(packet)


func _on_text(text: String) -> void:
	var parsed: Variant = JSON.parse_string(text)
	if not parsed is Dictionary:
		return
	var message: Dictionary = parsed
	if message.get("type") == "error":
		error_received.emit(int(message.get("frame_id", 0)), str(message.get("message", "")))
		if message.get("session_ended", false):
			_config_changed = true  # the next config opens a new session


func _on_result(packet: PackedByteArray) -> void:
	if packet.size() < RESULT_HEADER_SIZE or packet.decode_u32(0) != RESULT_MAGIC:
		error_received.emit(0, "the bridge sent a binary message that is not a result")
		return
	var frame_id := packet.decode_u32(4)
	var format := packet.decode_u32(8)
	var width := packet.decode_u32(12)
	var height := packet.decode_u32(16)
	var dropped := packet.decode_u32(20)
	var lag_ms := packet.decode_float(28)
	var length := packet.decode_u32(36)
	var data := packet.slice(RESULT_HEADER_SIZE, RESULT_HEADER_SIZE + length)
	var image: Image
	var status := OK
	match format:
		FORMAT_RAW:
			image = Image.create_from_data(width, height, false, Image.FORMAT_RGB8, data)
		FORMAT_JPEG:
			image = Image.new()
			status = image.load_jpg_from_buffer(data)
		FORMAT_PNG:
			image = Image.new()
			status = image.load_png_from_buffer(data)
		FORMAT_WEBP:
			image = Image.new()
			status = image.load_webp_from_buffer(data)
		_:
			status = ERR_INVALID_DATA
	if status != OK or image == null or image.is_empty():
		error_received.emit(frame_id, "cannot decode the result (format %d)" % format)
		return
	var same := (
		_texture != null
		and _texture.get_size() == Vector2(image.get_size())
		and _texture.get_format() == image.get_format()
	)
	if same:
		_texture.update(image)  # no new GPU texture per frame
	else:
		_texture = ImageTexture.create_from_image(image)
	if result_rect != null:
		result_rect.texture = _texture
	frame_received.emit(frame_id, _texture, lag_ms, dropped)


## A SubViewport sharing the scene's world, rendered only when a frame is captured.
func _add_viewport(hdr: bool, data_layer: int) -> SubViewport:
	var viewport := SubViewport.new()
	viewport.size = capture_size
	# Float target, linear: depth and signed normals survive as they are.
	viewport.use_hdr_2d = hdr
	viewport.render_target_update_mode = SubViewport.UPDATE_DISABLED
	add_child(viewport)
	var follower := Camera3D.new()
	viewport.add_child(follower)
	follower.current = true
	_cameras.append(follower)
	_camera_layers.append(data_layer)
	return viewport


## A data pass: a camera that sees the scene plus one full-screen quad running the data
## shader as pass `kind` (0: depth, 1: normals), on `layer`.
func _add_data_pass(kind: int, layer: int) -> SubViewport:
	var viewport := _add_viewport(true, 1 << (layer - 1))
	var follower: Camera3D = _cameras[-1]
	# A fresh Environment is neutral (linear tone mapping, no glow, fog or adjustments),
	# so the floats reach the image as written.
	follower.environment = Environment.new()
	var material := ShaderMaterial.new()
	material.shader = DATA_SHADER
	material.set_shader_parameter("pass_kind", kind)
	_data_materials.append(material)
	var mesh := QuadMesh.new()
	mesh.size = Vector2(2.0, 2.0)
	var quad := MeshInstance3D.new()
	quad.mesh = mesh
	quad.material_override = material
	quad.layers = 1 << (layer - 1)
	quad.cast_shadow = GeometryInstance3D.SHADOW_CASTING_SETTING_OFF
	# The vertex shader places it; keep the engine from culling it by its own bounds.
	quad.extra_cull_margin = 16384.0
	quad.position = Vector3(0.0, 0.0, -1.0)
	follower.add_child(quad)
	return viewport
