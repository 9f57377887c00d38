defmodule Synod.Hub.Spec do
  @moduledoc false
  # Pure: checks and normalises child specs before anything is sent, and maps
  # child ids to ring keys. Never starts or sends anything.
  #
  # A stored spec keeps only what differs from the defaults: the bare start
  # MFA `{m, f, args}` when nothing else is set, otherwise a map without :id
  # (the id is the registry key) holding :start and the non-default
  # :restart/:shutdown/:type/:modules. Every member keeps a copy of every
  # spec, so its size is most of the registry's size.

  @restarts [:permanent, :transient, :temporary]
  @types [:worker, :supervisor]
  @keys [:id, :start, :restart, :shutdown, :type, :modules, :significant]

  @doc """
  The ring key of a child id. Binaries and atoms are used as they are (so a C
  node places them with no Erlang term encoding); any other term is hashed as
  its external term format with `[:deterministic, minor_version: 2]`, pinned
  so the bytes do not change with the OTP default.
  """
  @spec ring_key(term()) :: binary() | atom()
  def ring_key(id) when is_binary(id) or is_atom(id), do: id
  def ring_key(id), do: :erlang.term_to_binary(id, [:deterministic, minor_version: 2])

  @doc "Normalises every spec; `{:ok, [{id, spec}]}` or `{:error, [{spec_or_id, reason}]}`."
  @spec normalize_all([term()]) ::
          {:ok, [{term(), tuple() | map()}]} | {:error, [{term(), term()}]}
  def normalize_all(specs) when is_list(specs) do
    {good, bad} =
      Enum.reduce(specs, {[], []}, fn spec, {good, bad} ->
        case normalize(spec) do
          {:ok, id, stored} -> {[{id, stored} | good], bad}
          {:error, reason} -> {good, [{spec_label(spec), reason} | bad]}
        end
      end)

    if bad == [], do: {:ok, Enum.reverse(good)}, else: {:error, Enum.reverse(bad)}
  end

  defp spec_label(%{id: id}), do: id
  defp spec_label(spec), do: spec

  @doc "Normalises one child spec (anything `Supervisor.child_spec/2` accepts)."
  @spec normalize(term()) :: {:ok, term(), tuple() | map()} | {:error, term()}
  def normalize(spec) do
    map =
      try do
        Supervisor.child_spec(spec, [])
      rescue
        e in ArgumentError -> {:error, {:invalid_child_spec, Exception.message(e)}}
        e -> {:error, {:invalid_child_spec, Exception.message(e)}}
      end

    with %{} <- map, :ok <- check(map) do
      {:ok, map.id, compact(map)}
    else
      {:error, _} = error -> error
    end
  end

  defp check(map) do
    cond do
      not Map.has_key?(map, :id) ->
        {:error, :missing_id}

      not Map.has_key?(map, :start) ->
        {:error, :missing_start}

      (unknown = Map.keys(map) -- @keys) != [] ->
        {:error, {:unknown_keys, unknown}}

      not mfa?(map.start) ->
        {:error, {:invalid_start, map.start}}

      Map.get(map, :restart, :permanent) not in @restarts ->
        {:error, {:invalid_restart, map.restart}}

      Map.get(map, :type, :worker) not in @types ->
        {:error, {:invalid_type, map.type}}

      not shutdown?(Map.get(map, :shutdown, 5_000)) ->
        {:error, {:invalid_shutdown, map.shutdown}}

      Map.get(map, :significant, false) != false ->
        {:error, :significant_not_supported}

      true ->
        :ok
    end
  end

  defp mfa?({m, f, a}) when is_atom(m) and is_atom(f) and is_list(a), do: true
  defp mfa?(_), do: false

  defp shutdown?(s), do: s in [:brutal_kill, :infinity] or (is_integer(s) and s >= 0)

  defp compact(map) do
    compact =
      map
      |> Map.drop([:id, :significant])
      |> drop_default(:restart, :permanent)
      |> drop_default(:type, :worker)
      |> drop_default(
        :shutdown,
        if(Map.get(map, :type) == :supervisor, do: :infinity, else: 5_000)
      )

    case compact do
      %{start: mfa} = only_start when map_size(only_start) == 1 -> mfa
      compact -> compact
    end
  end

  defp drop_default(map, key, default) do
    if Map.get(map, key) == default, do: Map.delete(map, key), else: map
  end

  @doc "The restart policy of a stored spec."
  @spec restart(tuple() | map()) :: :permanent | :transient | :temporary
  def restart({_, _, _}), do: :permanent
  def restart(spec), do: Map.get(spec, :restart, :permanent)

  @doc """
  The spec handed to the node's DynamicSupervisor: the start MFA wrapped by
  `Synod.Hub.Starter`, which tells the coordinator the pid on every (re)start.
  """
  @spec supervised(atom(), term(), tuple() | map()) :: map()
  def supervised(hub, id, {m, _, _} = mfa) do
    %{id: id, start: {Synod.Hub.Starter, :start_link, [hub, id, mfa]}, modules: [m]}
  end

  def supervised(hub, id, %{start: {m, _, _} = mfa} = spec) do
    spec
    |> Map.put(:id, id)
    |> Map.put(:start, {Synod.Hub.Starter, :start_link, [hub, id, mfa]})
    |> Map.put_new(:modules, [m])
  end

  @doc "Duplicate ids in a list, each once, in first-seen order."
  @spec duplicates([term()]) :: [term()]
  def duplicates(ids) do
    {_, dups} =
      Enum.reduce(ids, {MapSet.new(), []}, fn id, {seen, dups} ->
        if MapSet.member?(seen, id), do: {seen, [id | dups]}, else: {MapSet.put(seen, id), dups}
      end)

    dups |> Enum.reverse() |> Enum.uniq()
  end
end
