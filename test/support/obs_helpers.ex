defmodule Synod.Test.PromChecker do
  @moduledoc false
  # A checker of the Prometheus text exposition format (0.0.4), written for
  # the observability tests. `check/1` returns {:ok, samples} with every
  # sample as {name, labels_map, value}, or {:error, [problem]}. It checks:
  #
  #   * metric and label names match [a-zA-Z_:][a-zA-Z0-9_:]* / [a-zA-Z_][a-zA-Z0-9_]*
  #   * every family has one # HELP and one # TYPE line, before its samples,
  #     and TYPE is counter | gauge | histogram | summary | untyped
  #   * label values are quoted and escaped: only \\ \" \n after a backslash
  #   * values parse as floats (or +Inf, -Inf, NaN); counters are >= 0
  #   * a sample belongs to the last family declared (histograms: _bucket,
  #     _sum, _count; counters may end in _total)
  #   * histograms: per label set, `le` buckets strictly increasing, counts
  #     non-decreasing, the last one le="+Inf", then _sum and _count with
  #     _count equal to the +Inf bucket

  @name ~r/^[a-zA-Z_:][a-zA-Z0-9_:]*$/
  @label ~r/^[a-zA-Z_][a-zA-Z0-9_]*$/

  def check(text) when is_binary(text) do
    lines = text |> String.split("\n") |> Enum.with_index(1)

    {samples, state} =
      Enum.reduce(lines, {[], %{family: nil, types: %{}, helps: %{}, errors: []}}, fn
        {"", _}, acc -> acc
        {line, n}, {samples, st} -> line(line, n, samples, st)
      end)

    samples = Enum.reverse(samples)
    errors = Enum.reverse(state.errors) ++ histogram_errors(samples, state.types)
    if errors == [], do: {:ok, samples}, else: {:error, errors}
  end

  defp line("# HELP " <> rest, n, samples, st) do
    case String.split(rest, " ", parts: 2) do
      [name | _] ->
        st = if Map.has_key?(st.helps, name), do: err(st, n, "second HELP for #{name}"), else: st

        st =
          if Regex.match?(@name, name),
            do: st,
            else: err(st, n, "bad metric name #{inspect(name)}")

        {samples, %{st | helps: Map.put(st.helps, name, true), family: name}}
    end
  end

  defp line("# TYPE " <> rest, n, samples, st) do
    case String.split(rest, " ") do
      [name, type] when type in ~w(counter gauge histogram summary untyped) ->
        st = if Map.has_key?(st.types, name), do: err(st, n, "second TYPE for #{name}"), else: st
        st = if st.family == name, do: st, else: err(st, n, "TYPE #{name} without its HELP first")
        {samples, %{st | types: Map.put(st.types, name, type), family: name}}

      _ ->
        {samples, err(st, n, "bad TYPE line #{inspect(rest)}")}
    end
  end

  defp line("#" <> _comment, _n, samples, st), do: {samples, st}

  defp line(line, n, samples, st) do
    case sample(line) do
      {:ok, name, labels, value} ->
        st = belongs(st, n, name, value)
        {[{name, labels, value} | samples], st}

      {:error, why} ->
        {samples, err(st, n, why)}
    end
  end

  defp belongs(st, n, name, value) do
    family = st.family
    type = st.types[family]

    ok_name =
      case type do
        "histogram" -> name in [family <> "_bucket", family <> "_sum", family <> "_count"]
        "counter" -> name == family or name == family <> "_total"
        nil -> false
        _ -> name == family
      end

    cond do
      not ok_name ->
        err(st, n, "sample #{name} outside its family (last TYPE: #{inspect(family)})")

      type == "counter" and is_number(value) and value < 0 ->
        err(st, n, "negative counter #{name}")

      true ->
        st
    end
  end

  defp sample(line) do
    case Regex.run(~r/^([^{\s]+)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$/s, line) do
      [_, name | rest] ->
        {labels_text, value} =
          case rest do
            [_, labels, value | _] -> {labels, value}
          end

        with :ok <- name_ok(name),
             {:ok, labels} <- labels(labels_text, %{}),
             {:ok, value} <- value(value) do
          {:ok, name, labels, value}
        end

      nil ->
        {:error, "not a sample line: #{inspect(line)}"}
    end
  end

  defp name_ok(name),
    do: if(Regex.match?(@name, name), do: :ok, else: {:error, "bad metric name #{inspect(name)}"})

  defp labels("", acc), do: {:ok, acc}

  defp labels(text, acc) do
    with [_, key, rest] <- Regex.run(~r/^([^=]*)="(.*)$/s, text),
         true <- Regex.match?(@label, key) || {:error, "bad label name #{inspect(key)}"},
         false <- Map.has_key?(acc, key) && {:error, "label #{key} twice"},
         {:ok, value, rest} <- label_value(rest, "") do
      case rest do
        "" -> {:ok, Map.put(acc, key, value)}
        "," <> more -> labels(more, Map.put(acc, key, value))
        other -> {:error, "junk after label #{key}: #{inspect(other)}"}
      end
    else
      {:error, _} = e -> e
      _ -> {:error, "bad labels #{inspect(text)}"}
    end
  end

  defp label_value(<<"\\\\", rest::binary>>, acc), do: label_value(rest, acc <> "\\")
  defp label_value(<<"\\\"", rest::binary>>, acc), do: label_value(rest, acc <> "\"")
  defp label_value(<<"\\n", rest::binary>>, acc), do: label_value(rest, acc <> "\n")
  defp label_value(<<"\\", _::binary>>, _acc), do: {:error, "bad escape in a label value"}
  defp label_value(<<"\n", _::binary>>, _acc), do: {:error, "raw newline in a label value"}
  defp label_value(<<"\"", rest::binary>>, acc), do: {:ok, acc, rest}
  defp label_value(<<c::utf8, rest::binary>>, acc), do: label_value(rest, acc <> <<c::utf8>>)
  defp label_value(_, _acc), do: {:error, "unterminated label value"}

  defp value("+Inf"), do: {:ok, :inf}
  defp value("-Inf"), do: {:ok, :neg_inf}
  defp value("NaN"), do: {:ok, :nan}

  defp value(text) do
    case Float.parse(text) do
      {v, ""} -> {:ok, v}
      _ -> {:error, "bad value #{inspect(text)}"}
    end
  end

  defp histogram_errors(samples, types) do
    for {family, "histogram"} <- types,
        {labels, series} <- histogram_series(samples, family),
        problem <- histogram_problems(series),
        do: "histogram #{family}#{inspect(labels)}: #{problem}"
  end

  defp histogram_series(samples, family) do
    samples
    |> Enum.filter(fn {name, _, _} -> String.starts_with?(name, family <> "_") end)
    |> Enum.group_by(fn {_, labels, _} -> Map.delete(labels, "le") end)
  end

  defp histogram_problems(series) do
    buckets =
      for {name, labels, v} <- series, String.ends_with?(name, "_bucket"), do: {labels["le"], v}

    les = Enum.map(buckets, fn {le, _} -> le_value(le) end)
    counts = Enum.map(buckets, &elem(&1, 1))
    count = for {name, _, v} <- series, String.ends_with?(name, "_count"), do: v
    sum = for {name, _, _} <- series, String.ends_with?(name, "_sum"), do: :ok

    [
      buckets == [] && "no buckets",
      Enum.any?(les, &(&1 == :error)) && "a bucket without a valid le",
      les != [] and List.last(les) != :inf && "last bucket is not le=\"+Inf\"",
      not increasing?(les) && "le not strictly increasing",
      counts != Enum.sort(counts) && "bucket counts decreasing",
      length(count) != 1 && "needs one _count",
      length(sum) != 1 && "needs one _sum",
      count != [] and counts != [] and hd(count) != List.last(counts) && "_count != +Inf bucket"
    ]
    |> Enum.filter(&is_binary/1)
  end

  defp le_value(nil), do: :error
  defp le_value("+Inf"), do: :inf

  defp le_value(text) do
    case Float.parse(text) do
      {v, ""} -> v
      _ -> :error
    end
  end

  defp increasing?([a, b | rest]) when is_float(a) and ((is_float(b) and b > a) or b == :inf),
    do: increasing?([b | rest])

  defp increasing?([_]), do: true
  defp increasing?([]), do: true
  defp increasing?(_), do: false

  defp err(st, n, why), do: %{st | errors: ["line #{n}: #{why}" | st.errors]}
end

defmodule Synod.Test.Obs do
  @moduledoc false
  # Functions the observability tests run on peers (compiled, so they exist
  # on every peer) and small HTTP helpers.

  @doc "Attaches a handler on this node that sends every event of `events` to `pid`."
  def forward(id, events, pid) do
    _ = Synod.Telemetry.detach(id)
    Synod.Telemetry.attach_many(id, events, &__MODULE__.send_event/4, pid)
  end

  @doc false
  def send_event(event, measurements, metadata, pid),
    do: send(pid, {:obs_event, node(), event, measurements, metadata})

  @doc "Starts an observer not linked to the calling (short-lived) erpc process; returns its port."
  def start_observer(opts) do
    {:ok, pid} = Synod.Observer.start_link(opts)
    Process.unlink(pid)
    Synod.Observer.port(pid)
  end

  @doc "Takes and releases lock `key` of `store` `n` times; the tokens."
  def lock(store, key, n) do
    for _ <- 1..n do
      {:ok, token, :held} = Synod.Lock.try_lock(store, key, fn -> :held end)
      token
    end
  end

  @doc "A candidate `id` here wins election `name` of `store`, then steps down and closes."
  def election_cycle(store, name, id) do
    {:ok, c} = Synod.Election.candidate(store, name, id, ttl: 3_000)
    {:ok, :leader} = Synod.Election.start(c)
    :ok = Synod.Election.stop(c)
    :ok = Synod.Election.close(c)
  end

  @doc "Enqueues `n` values on queue `q`, dequeues `d` of them, then counts (the depth event)."
  def queue(store, q, n, d) do
    for v <- 1..n, do: {:ok, _, _} = Synod.Queue.enqueue(store, q, v)
    for _ <- 1..d//1, do: {:ok, _} = Synod.Queue.dequeue(store, q, timeout: 0)
    Synod.Queue.count(store, q)
  end

  @doc "Creates a task on `topic`, reserves it and terminates it: three transitions."
  def task_cycle(store, topic) do
    {:ok, _created} = Synod.Tasks.create_task(store, %{topic: topic})
    {:ok, t} = Synod.Tasks.reserve_task(store, topic, self())
    {:ok, _} = Synod.Tasks.terminate(store, t, self())
    t.id
  end

  @doc "GET `path` on 127.0.0.1:`port` with `headers`: {status, headers, body}."
  def get(port, path, headers \\ []) do
    request(:get, port, path, headers)
  end

  def request(method, port, path, headers \\ []) do
    url = ~c"http://127.0.0.1:#{port}#{path}"
    headers = for {k, v} <- headers, do: {to_charlist(k), to_charlist(v)}

    req =
      if method in [:post, :put],
        do: {url, headers, ~c"text/plain", ~c""},
        else: {url, headers}

    {:ok, {{_, status, _}, resp_headers, body}} =
      :httpc.request(method, req, [timeout: 10_000], body_format: :binary)

    {status, Map.new(resp_headers, fn {k, v} -> {to_string(k), to_string(v)} end), body}
  end
end

defmodule Synod.Test.ObsBench do
  @moduledoc false
  # Run on the peers of bench/observability_bench.exs: metrics on or off.

  @doc "Starts Synod.Metrics here (not linked to the erpc caller)."
  def metrics_on do
    case Synod.Metrics.start_link([]) do
      {:ok, pid} -> Process.unlink(pid)
      {:error, {:already_started, _}} -> :ok
    end

    :ok
  end

  @doc "Counts, from now on, the events Synod.Metrics consumes that are emitted here, by event."
  def count_events do
    ref = :counters.new(length(Synod.Metrics.events()), [:write_concurrency])
    :persistent_term.put({__MODULE__, :counts}, ref)
    index = Synod.Metrics.events() |> Enum.with_index(1) |> Map.new()
    _ = Synod.Telemetry.detach({__MODULE__, :count})

    Synod.Telemetry.attach_many(
      {__MODULE__, :count},
      Synod.Metrics.events(),
      &__MODULE__.count_one/4,
      {ref, index}
    )
  end

  @doc false
  def count_one(event, _m, _md, {ref, index}), do: :counters.add(ref, Map.fetch!(index, event), 1)

  @doc "Stops counting; the counts since count_events/0, by event (nonzero only)."
  def counted do
    _ = Synod.Telemetry.detach({__MODULE__, :count})
    ref = :persistent_term.get({__MODULE__, :counts})

    for {event, i} <- Enum.with_index(Synod.Metrics.events(), 1),
        (n = :counters.get(ref, i)) > 0,
        into: %{},
        do: {event, n}
  end

  @doc "Stops Synod.Metrics here: no handler attached, events cost one ETS lookup."
  def metrics_off do
    if pid = Process.whereis(Synod.Metrics), do: GenServer.stop(pid)
    :ok
  end
end
