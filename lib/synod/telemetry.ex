defmodule Synod.Telemetry do
  @moduledoc """
  Synod's events: one function to emit them, and a small handler registry
  for applications that do not run `:telemetry`.

  When the `:telemetry` module is loaded, `execute/3` hands every event to
  `:telemetry.execute/3`, so handlers attached with `:telemetry.attach/4`
  see them. Otherwise the event goes to the handlers attached here with
  `attach/4` and `attach_many/4`, with the same event names, measurements
  and metadata, so an application that adds `:telemetry` later sees the
  same events. Handlers attached here are called in both cases.

  A handler runs in the process that emits the event. A handler that
  raises, throws or exits is detached and logged once, as `:telemetry`
  does, so it never breaks the process that emitted the event.

  Every event name starts with `:synod`; the table of events is in
  docs/observability.md.

      Synod.Telemetry.attach("log-leaders", [:synod, :raft, :leader],
        fn event, measurements, metadata, _config ->
          IO.inspect({event, measurements, metadata})
        end, nil)
  """

  use GenServer
  require Logger

  @table __MODULE__

  @typedoc "An event name: a list of atoms that starts with `:synod`."
  @type event :: [atom(), ...]
  @typedoc "A handler: called with the event, its measurements, its metadata and the handler's config."
  @type handler :: (event(), map(), map(), term() -> any())
  @typedoc "A handler's id: any term, unique among the attached handlers."
  @type handler_id :: term()

  @doc false
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(_opts), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @doc """
  Emits `event` with `measurements` and `metadata`.

  Costs one ETS lookup when nothing is attached here (and `:telemetry` is
  not loaded). Never raises because of a handler.
  """
  @spec execute(event(), map(), map()) :: :ok
  def execute(event, measurements, metadata \\ %{})
      when is_list(event) and is_map(measurements) and is_map(metadata) do
    if :erlang.function_exported(:telemetry, :execute, 3) do
      apply(:telemetry, :execute, [event, measurements, metadata])
    end

    local(event, measurements, metadata)
  end

  @doc """
  Whether an event named `event` would reach a handler: `:telemetry` is
  loaded (its handlers are not looked up here), or a handler is attached
  here to `event`. An emitter whose event costs work to build (a clock
  read, a map split) checks this first and skips the work when it is
  false; `execute/3` does not need it. One ETS lookup.
  """
  @spec attached?(event()) :: boolean()
  def attached?(event) do
    :erlang.function_exported(:telemetry, :execute, 3) or :ets.member(@table, event)
  rescue
    ArgumentError -> false
  end

  @doc """
  Runs `fun` and emits `event ++ [:start]` before it and `event ++ [:stop]`
  after it with its `duration` (native time units), or `event ++
  [:exception]` with `kind`, `reason` and `stacktrace` in the metadata if it
  raises, throws or exits (then re-raises). Returns what `fun` returns.
  """
  @spec span(event(), map(), (() -> result)) :: result when result: term()
  def span(event, metadata, fun)
      when is_list(event) and is_map(metadata) and is_function(fun, 0) do
    start = System.monotonic_time()

    execute(
      event ++ [:start],
      %{monotonic_time: start, system_time: System.system_time()},
      metadata
    )

    try do
      fun.()
    catch
      kind, reason ->
        stack = __STACKTRACE__

        execute(
          event ++ [:exception],
          %{duration: System.monotonic_time() - start},
          Map.merge(metadata, %{kind: kind, reason: reason, stacktrace: stack})
        )

        :erlang.raise(kind, reason, stack)
    else
      result ->
        execute(event ++ [:stop], %{duration: System.monotonic_time() - start}, metadata)
        result
    end
  end

  @doc """
  Attaches `fun` under `id` to one event. Returns `{:error, :already_exists}`
  if `id` is taken.
  """
  @spec attach(handler_id(), event(), handler(), term()) :: :ok | {:error, :already_exists}
  def attach(id, event, fun, config), do: attach_many(id, [event], fun, config)

  @doc """
  Attaches `fun` under `id` to every event in `events`. Raises
  `ArgumentError` for an event that is not a non-empty list of atoms or a
  function that does not take 4 arguments.
  """
  @spec attach_many(handler_id(), [event()], handler(), term()) :: :ok | {:error, :already_exists}
  def attach_many(id, events, fun, config) do
    Synod.Coord.Options.check!(
      events,
      :events,
      {:custom, &events?/1, "a non-empty list of events (non-empty lists of atoms)"}
    )

    Synod.Coord.Options.check!(fun, :handler, {:fun, 4})
    GenServer.call(__MODULE__, {:attach, id, events, fun, config})
  end

  @doc "Detaches the handler `id`. Returns `{:error, :not_found}` if none is attached under it."
  @spec detach(handler_id()) :: :ok | {:error, :not_found}
  def detach(id), do: GenServer.call(__MODULE__, {:detach, id})

  @doc "The handlers attached here, as `{id, event, config}`, sorted."
  @spec list_handlers() :: [{handler_id(), event(), term()}]
  def list_handlers do
    if :ets.whereis(@table) == :undefined do
      []
    else
      for {event, id, _fun, config} <- :ets.tab2list(@table), do: {id, event, config}
    end
    |> Enum.sort()
  end

  defp events?(events) do
    is_list(events) and events != [] and
      Enum.all?(events, fn e -> is_list(e) and e != [] and Enum.all?(e, &is_atom/1) end)
  end

  defp local(event, measurements, metadata) do
    case :ets.whereis(@table) do
      :undefined ->
        :ok

      _ ->
        for {_, id, fun, config} <- :ets.lookup(@table, event) do
          try do
            fun.(event, measurements, metadata, config)
          catch
            kind, reason ->
              Logger.error(
                "Synod.Telemetry: handler #{inspect(id)} detached after it failed on " <>
                  "#{inspect(event)}: #{Exception.format(kind, reason, __STACKTRACE__)}"
              )

              detach(id)
          end
        end

        :ok
    end
  end

  @impl true
  def init(nil) do
    :ets.new(@table, [:bag, :named_table, :protected, read_concurrency: true])
    {:ok, nil}
  end

  @impl true
  def handle_call({:attach, id, events, fun, config}, _from, state) do
    if :ets.match_object(@table, {:_, id, :_, :_}) != [] do
      {:reply, {:error, :already_exists}, state}
    else
      :ets.insert(@table, for(e <- events, do: {e, id, fun, config}))
      {:reply, :ok, state}
    end
  end

  def handle_call({:detach, id}, _from, state) do
    case :ets.match_object(@table, {:_, id, :_, :_}) do
      [] ->
        {:reply, {:error, :not_found}, state}

      rows ->
        Enum.each(rows, &:ets.delete_object(@table, &1))
        {:reply, :ok, state}
    end
  end

  def handle_call(request, _from, state) do
    {:reply, {:error, {:bad_request, request}}, state}
  end

  @impl true
  def handle_cast(_msg, state), do: {:noreply, state}

  @impl true
  def handle_info(_msg, state), do: {:noreply, state}
end
