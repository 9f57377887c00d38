defmodule Synod.Test.HubTelemetry do
  @moduledoc false
  # Runs on a peer: forwards the hub's telemetry events to a test process.

  @events [
    [:synod, :hub, :children, :started],
    [:synod, :hub, :children, :stopped],
    [:synod, :hub, :children, :migrated],
    [:synod, :hub, :redistribution, :stop],
    [:synod, :hub, :partition]
  ]

  @doc "The hub's events (the names agreed in the preamble of docs/hub.md, \"Events\")."
  def events, do: @events

  @doc "Attaches a handler on this node sending `{:telemetry, node, event, measurements, metadata}` to `target`."
  def forward(target) do
    Synod.Telemetry.attach_many({__MODULE__, target}, @events, &__MODULE__.handle/4, target)
  end

  @doc false
  def handle(event, measurements, metadata, target),
    do: send(target, {:telemetry, node(), event, measurements, metadata})
end
