"""A job kind another app brings: found because the app is installed, nothing in Runboard names it."""

from pydantic import BaseModel, ConfigDict, Field

from jobs.context import KindContext
from jobs.kinds.registry import JobKind, register


class ExtraEchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Extra: echo")

    text: str = Field("hello", max_length=200, title="Text")


def echo(ctx: KindContext, params: ExtraEchoParams) -> dict[str, str]:
    ctx.progress(1, 1, "echoed")
    return {"echo": params.text}


register(
    JobKind(
        name="extra_echo",
        title="Extra: echo",
        description="Returns its text: a kind from another installed app.",
        params_model=ExtraEchoParams,
        run=echo,
        soft_time_limit=10,
        time_limit=20,
    )
)
