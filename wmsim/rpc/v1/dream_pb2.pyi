from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ObsType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBS_TYPE_UNSPECIFIED: _ClassVar[ObsType]
    OBS_TYPE_PIXELS: _ClassVar[ObsType]
    OBS_TYPE_LATENT: _ClassVar[ObsType]

class Latents(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LATENTS_UNSPECIFIED: _ClassVar[Latents]
    LATENTS_SAMPLED: _ClassVar[Latents]
    LATENTS_MODE: _ClassVar[Latents]
OBS_TYPE_UNSPECIFIED: ObsType
OBS_TYPE_PIXELS: ObsType
OBS_TYPE_LATENT: ObsType
LATENTS_UNSPECIFIED: Latents
LATENTS_SAMPLED: Latents
LATENTS_MODE: Latents

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class GetSpecRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSpecResponse(_message.Message):
    __slots__ = ("spec_json", "num_contexts", "max_envs", "free_envs", "max_batch", "server_version", "device", "envs_stepped", "model_calls")
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    NUM_CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ENVS_FIELD_NUMBER: _ClassVar[int]
    FREE_ENVS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ENVS_STEPPED_FIELD_NUMBER: _ClassVar[int]
    MODEL_CALLS_FIELD_NUMBER: _ClassVar[int]
    spec_json: str
    num_contexts: int
    max_envs: int
    free_envs: int
    max_batch: int
    server_version: str
    device: str
    envs_stepped: int
    model_calls: int
    def __init__(self, spec_json: _Optional[str] = ..., num_contexts: _Optional[int] = ..., max_envs: _Optional[int] = ..., free_envs: _Optional[int] = ..., max_batch: _Optional[int] = ..., server_version: _Optional[str] = ..., device: _Optional[str] = ..., envs_stepped: _Optional[int] = ..., model_calls: _Optional[int] = ...) -> None: ...

class OpenSessionRequest(_message.Message):
    __slots__ = ("num_envs", "obs_type", "latents")
    NUM_ENVS_FIELD_NUMBER: _ClassVar[int]
    OBS_TYPE_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    num_envs: int
    obs_type: ObsType
    latents: Latents
    def __init__(self, num_envs: _Optional[int] = ..., obs_type: _Optional[_Union[ObsType, str]] = ..., latents: _Optional[_Union[Latents, str]] = ...) -> None: ...

class OpenSessionResponse(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CloseSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CloseSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Reset(_message.Message):
    __slots__ = ("env", "seed")
    ENV_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    env: int
    seed: int
    def __init__(self, env: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("resets", "step_envs", "actions", "frame_envs")
    RESETS_FIELD_NUMBER: _ClassVar[int]
    STEP_ENVS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    FRAME_ENVS_FIELD_NUMBER: _ClassVar[int]
    resets: _containers.RepeatedCompositeFieldContainer[Reset]
    step_envs: _containers.RepeatedScalarFieldContainer[int]
    actions: Tensor
    frame_envs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, resets: _Optional[_Iterable[_Union[Reset, _Mapping]]] = ..., step_envs: _Optional[_Iterable[int]] = ..., actions: _Optional[_Union[Tensor, _Mapping]] = ..., frame_envs: _Optional[_Iterable[int]] = ...) -> None: ...

class StepResponse(_message.Message):
    __slots__ = ("reset_obs", "contexts", "obs", "reward", "continue_prob", "terminated", "frames")
    RESET_OBS_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    OBS_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_PROB_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    reset_obs: Tensor
    contexts: Tensor
    obs: Tensor
    reward: Tensor
    continue_prob: Tensor
    terminated: Tensor
    frames: Tensor
    def __init__(self, reset_obs: _Optional[_Union[Tensor, _Mapping]] = ..., contexts: _Optional[_Union[Tensor, _Mapping]] = ..., obs: _Optional[_Union[Tensor, _Mapping]] = ..., reward: _Optional[_Union[Tensor, _Mapping]] = ..., continue_prob: _Optional[_Union[Tensor, _Mapping]] = ..., terminated: _Optional[_Union[Tensor, _Mapping]] = ..., frames: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
