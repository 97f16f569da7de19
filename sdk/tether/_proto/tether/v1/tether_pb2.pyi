from . import image_pb2 as _image_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ControlMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTROL_MODE_UNSPECIFIED: _ClassVar[ControlMode]
    CONTROL_MODE_BALANCED: _ClassVar[ControlMode]
    CONTROL_MODE_PROMPT: _ClassVar[ControlMode]
    CONTROL_MODE_CONTROL: _ClassVar[ControlMode]

class DepthBuffer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPTH_BUFFER_UNSPECIFIED: _ClassVar[DepthBuffer]
    DEPTH_BUFFER_LINEAR: _ClassVar[DepthBuffer]
    DEPTH_BUFFER_HARDWARE: _ClassVar[DepthBuffer]
    DEPTH_BUFFER_HARDWARE_REVERSED: _ClassVar[DepthBuffer]
    DEPTH_BUFFER_POSITIONS: _ClassVar[DepthBuffer]

class NormalSpace(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NORMAL_SPACE_UNSPECIFIED: _ClassVar[NormalSpace]
    NORMAL_SPACE_VIEW: _ClassVar[NormalSpace]
    NORMAL_SPACE_WORLD: _ClassVar[NormalSpace]

class ResizeMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESIZE_MODE_UNSPECIFIED: _ClassVar[ResizeMode]
    RESIZE_MODE_JUST_RESIZE: _ClassVar[ResizeMode]
    RESIZE_MODE_CROP_AND_RESIZE: _ClassVar[ResizeMode]
    RESIZE_MODE_RESIZE_AND_FILL: _ClassVar[ResizeMode]

class PreviewMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREVIEW_MODE_UNSPECIFIED: _ClassVar[PreviewMode]
    PREVIEW_MODE_NONE: _ClassVar[PreviewMode]
    PREVIEW_MODE_FAST: _ClassVar[PreviewMode]
    PREVIEW_MODE_FULL: _ClassVar[PreviewMode]

class Tiling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TILING_UNSPECIFIED: _ClassVar[Tiling]
    TILING_X: _ClassVar[Tiling]
    TILING_Y: _ClassVar[Tiling]
    TILING_XY: _ClassVar[Tiling]
CONTROL_MODE_UNSPECIFIED: ControlMode
CONTROL_MODE_BALANCED: ControlMode
CONTROL_MODE_PROMPT: ControlMode
CONTROL_MODE_CONTROL: ControlMode
DEPTH_BUFFER_UNSPECIFIED: DepthBuffer
DEPTH_BUFFER_LINEAR: DepthBuffer
DEPTH_BUFFER_HARDWARE: DepthBuffer
DEPTH_BUFFER_HARDWARE_REVERSED: DepthBuffer
DEPTH_BUFFER_POSITIONS: DepthBuffer
NORMAL_SPACE_UNSPECIFIED: NormalSpace
NORMAL_SPACE_VIEW: NormalSpace
NORMAL_SPACE_WORLD: NormalSpace
RESIZE_MODE_UNSPECIFIED: ResizeMode
RESIZE_MODE_JUST_RESIZE: ResizeMode
RESIZE_MODE_CROP_AND_RESIZE: ResizeMode
RESIZE_MODE_RESIZE_AND_FILL: ResizeMode
PREVIEW_MODE_UNSPECIFIED: PreviewMode
PREVIEW_MODE_NONE: PreviewMode
PREVIEW_MODE_FAST: PreviewMode
PREVIEW_MODE_FULL: PreviewMode
TILING_UNSPECIFIED: Tiling
TILING_X: Tiling
TILING_Y: Tiling
TILING_XY: Tiling

class CannyPreprocessor(_message.Message):
    __slots__ = ("low", "high")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    low: int
    high: int
    def __init__(self, low: _Optional[int] = ..., high: _Optional[int] = ...) -> None: ...

class DepthPreprocessor(_message.Message):
    __slots__ = ("buffer", "near", "far", "bottom_up")
    BUFFER_FIELD_NUMBER: _ClassVar[int]
    NEAR_FIELD_NUMBER: _ClassVar[int]
    FAR_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_UP_FIELD_NUMBER: _ClassVar[int]
    buffer: DepthBuffer
    near: float
    far: float
    bottom_up: bool
    def __init__(self, buffer: _Optional[_Union[DepthBuffer, str]] = ..., near: _Optional[float] = ..., far: _Optional[float] = ..., bottom_up: _Optional[bool] = ...) -> None: ...

class NormalPreprocessor(_message.Message):
    __slots__ = ("space", "camera_to_world", "y_down", "legacy", "bottom_up")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_TO_WORLD_FIELD_NUMBER: _ClassVar[int]
    Y_DOWN_FIELD_NUMBER: _ClassVar[int]
    LEGACY_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_UP_FIELD_NUMBER: _ClassVar[int]
    space: NormalSpace
    camera_to_world: _containers.RepeatedScalarFieldContainer[float]
    y_down: bool
    legacy: bool
    bottom_up: bool
    def __init__(self, space: _Optional[_Union[NormalSpace, str]] = ..., camera_to_world: _Optional[_Iterable[float]] = ..., y_down: _Optional[bool] = ..., legacy: _Optional[bool] = ..., bottom_up: _Optional[bool] = ...) -> None: ...

class InvertPreprocessor(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ControlUnit(_message.Message):
    __slots__ = ("model", "image", "weight", "start", "end", "mode", "canny", "depth", "normal", "invert", "resize")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CANNY_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    NORMAL_FIELD_NUMBER: _ClassVar[int]
    INVERT_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    model: str
    image: _image_pb2.Image
    weight: float
    start: float
    end: float
    mode: ControlMode
    canny: CannyPreprocessor
    depth: DepthPreprocessor
    normal: NormalPreprocessor
    invert: InvertPreprocessor
    resize: ResizeMode
    def __init__(self, model: _Optional[str] = ..., image: _Optional[_Union[_image_pb2.Image, _Mapping]] = ..., weight: _Optional[float] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., mode: _Optional[_Union[ControlMode, str]] = ..., canny: _Optional[_Union[CannyPreprocessor, _Mapping]] = ..., depth: _Optional[_Union[DepthPreprocessor, _Mapping]] = ..., normal: _Optional[_Union[NormalPreprocessor, _Mapping]] = ..., invert: _Optional[_Union[InvertPreprocessor, _Mapping]] = ..., resize: _Optional[_Union[ResizeMode, str]] = ...) -> None: ...

class PreviewOptions(_message.Message):
    __slots__ = ("mode", "every", "format")
    MODE_FIELD_NUMBER: _ClassVar[int]
    EVERY_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    mode: PreviewMode
    every: int
    format: _image_pb2.ImageFormat
    def __init__(self, mode: _Optional[_Union[PreviewMode, str]] = ..., every: _Optional[int] = ..., format: _Optional[_Union[_image_pb2.ImageFormat, str]] = ...) -> None: ...

class LoraWeight(_message.Message):
    __slots__ = ("name", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("model", "prompt", "negative_prompt", "seed", "steps", "guidance_scale", "width", "height", "scheduler", "controls", "init_image", "strength", "preview", "output_format", "mask", "mask_blur", "loras", "tiling", "upscale", "tile_size", "tile_overlap")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    MASK_BLUR_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    TILING_FIELD_NUMBER: _ClassVar[int]
    UPSCALE_FIELD_NUMBER: _ClassVar[int]
    TILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TILE_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance_scale: float
    width: int
    height: int
    scheduler: str
    controls: _containers.RepeatedCompositeFieldContainer[ControlUnit]
    init_image: _image_pb2.Image
    strength: float
    preview: PreviewOptions
    output_format: _image_pb2.ImageFormat
    mask: _image_pb2.Image
    mask_blur: float
    loras: _containers.RepeatedCompositeFieldContainer[LoraWeight]
    tiling: Tiling
    upscale: float
    tile_size: int
    tile_overlap: int
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., scheduler: _Optional[str] = ..., controls: _Optional[_Iterable[_Union[ControlUnit, _Mapping]]] = ..., init_image: _Optional[_Union[_image_pb2.Image, _Mapping]] = ..., strength: _Optional[float] = ..., preview: _Optional[_Union[PreviewOptions, _Mapping]] = ..., output_format: _Optional[_Union[_image_pb2.ImageFormat, str]] = ..., mask: _Optional[_Union[_image_pb2.Image, _Mapping]] = ..., mask_blur: _Optional[float] = ..., loras: _Optional[_Iterable[_Union[LoraWeight, _Mapping]]] = ..., tiling: _Optional[_Union[Tiling, str]] = ..., upscale: _Optional[float] = ..., tile_size: _Optional[int] = ..., tile_overlap: _Optional[int] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ("position",)
    POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    def __init__(self, position: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("step", "total", "preview")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    step: int
    total: int
    preview: _image_pb2.Image
    def __init__(self, step: _Optional[int] = ..., total: _Optional[int] = ..., preview: _Optional[_Union[_image_pb2.Image, _Mapping]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queued_ms", "prepare_ms", "denoise_ms", "decode_ms", "total_ms", "batch_size")
    QUEUED_MS_FIELD_NUMBER: _ClassVar[int]
    PREPARE_MS_FIELD_NUMBER: _ClassVar[int]
    DENOISE_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    queued_ms: float
    prepare_ms: float
    denoise_ms: float
    decode_ms: float
    total_ms: float
    batch_size: int
    def __init__(self, queued_ms: _Optional[float] = ..., prepare_ms: _Optional[float] = ..., denoise_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("image", "seed", "timings")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    image: _image_pb2.Image
    seed: int
    timings: Timings
    def __init__(self, image: _Optional[_Union[_image_pb2.Image, _Mapping]] = ..., seed: _Optional[int] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class GenerateEvent(_message.Message):
    __slots__ = ("queued", "progress", "result")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    queued: Queued
    progress: Progress
    result: Result
    def __init__(self, queued: _Optional[_Union[Queued, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BaseModel(_message.Message):
    __slots__ = ("name", "family", "default_width", "default_height")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    family: str
    default_width: int
    default_height: int
    def __init__(self, name: _Optional[str] = ..., family: _Optional[str] = ..., default_width: _Optional[int] = ..., default_height: _Optional[int] = ...) -> None: ...

class ControlModel(_message.Message):
    __slots__ = ("name", "kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class LoraModel(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_pixels", "max_steps", "max_controls", "max_queue", "max_batch", "max_message_bytes", "max_canvas_pixels")
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTROLS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CANVAS_PIXELS_FIELD_NUMBER: _ClassVar[int]
    max_pixels: int
    max_steps: int
    max_controls: int
    max_queue: int
    max_batch: int
    max_message_bytes: int
    max_canvas_pixels: int
    def __init__(self, max_pixels: _Optional[int] = ..., max_steps: _Optional[int] = ..., max_controls: _Optional[int] = ..., max_queue: _Optional[int] = ..., max_batch: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_canvas_pixels: _Optional[int] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "controls", "schedulers", "limits", "loras", "embeddings")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULERS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[BaseModel]
    controls: _containers.RepeatedCompositeFieldContainer[ControlModel]
    schedulers: _containers.RepeatedScalarFieldContainer[str]
    limits: Limits
    loras: _containers.RepeatedCompositeFieldContainer[LoraModel]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    def __init__(self, models: _Optional[_Iterable[_Union[BaseModel, _Mapping]]] = ..., controls: _Optional[_Iterable[_Union[ControlModel, _Mapping]]] = ..., schedulers: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., loras: _Optional[_Iterable[_Union[LoraModel, _Mapping]]] = ..., embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ...) -> None: ...

class PreprocessRequest(_message.Message):
    __slots__ = ("control", "width", "height", "format")
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    control: ControlUnit
    width: int
    height: int
    format: _image_pb2.ImageFormat
    def __init__(self, control: _Optional[_Union[ControlUnit, _Mapping]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[_Union[_image_pb2.ImageFormat, str]] = ...) -> None: ...

class PreprocessResponse(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: _image_pb2.Image
    def __init__(self, image: _Optional[_Union[_image_pb2.Image, _Mapping]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "device", "dtype", "limits", "live_sessions")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    LIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    version: str
    device: str
    dtype: str
    limits: Limits
    live_sessions: int
    def __init__(self, version: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., live_sessions: _Optional[int] = ...) -> None: ...

class LiveConfig(_message.Message):
    __slots__ = ("model", "prompt", "negative_prompt", "seed", "steps", "strength", "guidance_scale", "width", "height", "scheduler", "controls", "output_format", "reuse_threshold", "loras", "tiling")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    REUSE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    TILING_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    strength: float
    guidance_scale: float
    width: int
    height: int
    scheduler: str
    controls: _containers.RepeatedCompositeFieldContainer[ControlUnit]
    output_format: _image_pb2.ImageFormat
    reuse_threshold: float
    loras: _containers.RepeatedCompositeFieldContainer[LoraWeight]
    tiling: Tiling
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., strength: _Optional[float] = ..., guidance_scale: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., scheduler: _Optional[str] = ..., controls: _Optional[_Iterable[_Union[ControlUnit, _Mapping]]] = ..., output_format: _Optional[_Union[_image_pb2.ImageFormat, str]] = ..., reuse_threshold: _Optional[float] = ..., loras: _Optional[_Iterable[_Union[LoraWeight, _Mapping]]] = ..., tiling: _Optional[_Union[Tiling, str]] = ...) -> None: ...

class LiveFrame(_message.Message):
    __slots__ = ("id", "image", "controls")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    id: int
    image: _image_pb2.Image
    controls: _containers.RepeatedCompositeFieldContainer[_image_pb2.Image]
    def __init__(self, id: _Optional[int] = ..., image: _Optional[_Union[_image_pb2.Image, _Mapping]] = ..., controls: _Optional[_Iterable[_Union[_image_pb2.Image, _Mapping]]] = ...) -> None: ...

class LiveRequest(_message.Message):
    __slots__ = ("config", "frame")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    config: LiveConfig
    frame: LiveFrame
    def __init__(self, config: _Optional[_Union[LiveConfig, _Mapping]] = ..., frame: _Optional[_Union[LiveFrame, _Mapping]] = ...) -> None: ...

class LiveResult(_message.Message):
    __slots__ = ("frame_id", "image", "dropped", "latency_ms", "reused")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    image: _image_pb2.Image
    dropped: int
    latency_ms: float
    reused: bool
    def __init__(self, frame_id: _Optional[int] = ..., image: _Optional[_Union[_image_pb2.Image, _Mapping]] = ..., dropped: _Optional[int] = ..., latency_ms: _Optional[float] = ..., reused: _Optional[bool] = ...) -> None: ...

class LiveError(_message.Message):
    __slots__ = ("frame_id", "message")
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    frame_id: int
    message: str
    def __init__(self, frame_id: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class LiveEvent(_message.Message):
    __slots__ = ("result", "error")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    result: LiveResult
    error: LiveError
    def __init__(self, result: _Optional[_Union[LiveResult, _Mapping]] = ..., error: _Optional[_Union[LiveError, _Mapping]] = ...) -> None: ...
