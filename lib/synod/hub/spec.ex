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
  @stored_keys [:start, :restart, :shutdown, :type, :modules]

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
  def normalize_all(specs) when is_list(specs), do: normalize_all(specs, [])

  @doc """
  `normalize_all/1` with the ids too, both in reverse order (no list
  reversed, one walk): `{:ok, [{id, spec}] reversed, [id] reversed}` or
  `{:error, [{spec_or_id, reason}]}` (in order).
  """
  @spec normalize_all_rev([term()]) ::
          {:ok, [{term(), tuple() | map()}], [term()]} | {:error, [{term(), term()}]}
  def normalize_all_rev(specs) when is_list(specs), do: normalize_rev(specs, [], [])

  defp normalize_rev([%{id: id, start: {m, f, a} = mfa} = spec | specs], good, ids)
       when map_size(spec) == 2 and is_atom(m) and is_atom(f) and is_list(a),
       do: normalize_rev(specs, [{id, mfa} | good], [id | ids])

  defp normalize_rev([spec | specs], good, ids) do
    case normalize(spec) do
      {:ok, id, stored} -> normalize_rev(specs, [{id, stored} | good], [id | ids])
      {:error, reason} -> collect_bad(specs, [{spec_label(spec), reason}])
    end
  end

  defp normalize_rev([], good, ids), do: {:ok, good, ids}

  # One clause per spec, the common one (as in normalize/1) first, with no
  # tuple built per spec; the first bad spec hands over to collect_bad/2.
  defp normalize_all([%{id: id, start: {m, f, a} = mfa} = spec | specs], good)
       when map_size(spec) == 2 and is_atom(m) and is_atom(f) and is_list(a),
       do: normalize_all(specs, [{id, mfa} | good])

  defp normalize_all([spec | specs], good) do
    case normalize(spec) do
      {:ok, id, stored} -> normalize_all(specs, [{id, stored} | good])
      {:error, reason} -> collect_bad(specs, [{spec_label(spec), reason}])
    end
  end

  defp normalize_all([], good), do: {:ok, :lists.reverse(good)}

  defp collect_bad([spec | specs], bad) do
    case normalize(spec) do
      {:ok, _id, _stored} -> collect_bad(specs, bad)
      {:error, reason} -> collect_bad(specs, [{spec_label(spec), reason} | bad])
    end
  end

  defp collect_bad([], bad), do: {:error, :lists.reverse(bad)}

  defp spec_label(%{id: id}), do: id
  defp spec_label(spec), do: spec

  @doc "Normalises one child spec (anything `Supervisor.child_spec/2` accepts)."
  @spec normalize(term()) :: {:ok, term(), tuple() | map()} | {:error, term()}
  # The common case, answered without building the full child spec: a map
  # with only :id and a valid start MFA, which every check passes and which
  # compacts to the MFA itself.
  def normalize(%{id: id, start: {m, f, a} = mfa} = spec)
      when map_size(spec) == 2 and is_atom(m) and is_atom(f) and is_list(a),
      do: {:ok, id, mfa}

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

  @doc """
  Whether a term is a stored spec (the compact form above) that
  `child_info/1` reads: what a member checks before it starts a spec that
  came in a message.
  """
  @spec stored?(term()) :: boolean()
  def stored?({m, f, a}), do: mfa?({m, f, a})

  def stored?(%{start: start} = spec) do
    mfa?(start) and map_size(Map.drop(spec, @stored_keys)) == 0 and
      Map.get(spec, :restart, :permanent) in @restarts and
      Map.get(spec, :type, :worker) in @types and
      shutdown?(Map.get(spec, :shutdown, 5_000)) and
      is_list(Map.get(spec, :modules, []))
  end

  def stored?(_), do: false

  @doc "The restart policy of a stored spec."
  @spec restart(tuple() | map()) :: :permanent | :transient | :temporary
  def restart({_, _, _}), do: :permanent
  def restart(spec), do: Map.get(spec, :restart, :permanent)

  @doc """
  What a supervisor needs of a stored spec: `{start_mfa, restart, shutdown,
  type, modules}`, with the defaults of `Supervisor.child_spec/2` filled in.
  """
  @spec child_info(tuple() | map()) ::
          {mfa :: tuple(), atom(), timeout() | :brutal_kill, :worker | :supervisor, list()}
  def child_info({m, _, _} = mfa), do: {mfa, :permanent, 5_000, :worker, [m]}

  def child_info(%{start: {m, _, _} = mfa} = spec) do
    type = Map.get(spec, :type, :worker)
    shutdown = Map.get(spec, :shutdown, if(type == :supervisor, do: :infinity, else: 5_000))
    {mfa, Map.get(spec, :restart, :permanent), shutdown, type, Map.get(spec, :modules, [m])}
  end

  @doc "Duplicate ids in a list, each once, in first-seen order."
  @spec duplicates([term()]) :: [term()]
  def duplicates(ids) do
    # Usually there are none: one map built in C says so.
    if map_size(Map.from_keys(ids, true)) == length(ids), do: [], else: find_duplicates(ids)
  end

  defp find_duplicates(ids) do
    {_, dups} =
      Enum.reduce(ids, {MapSet.new(), []}, fn id, {seen, dups} ->
        if MapSet.member?(seen, id), do: {seen, [id | dups]}, else: {MapSet.put(seen, id), dups}
      end)

    dups |> Enum.reverse() |> Enum.uniq()
  end
end
