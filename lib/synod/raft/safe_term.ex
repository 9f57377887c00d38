defmodule Synod.Raft.SafeTerm do
  @moduledoc false
  # Decoding of Raft log entries and snapshot data with bounded atom
  # creation (docs/reliability.md, "Safe decoding"). Pure apart from the
  # node-wide count of atoms it has created: no I/O, no messages.
  #
  # First `binary_to_term(bin, [:safe])`: every term whose atoms already
  # exist (the store's entries always: their commands are binaries) costs
  # nothing more. If that refuses, the atoms the term names are listed by a
  # scan of the external term format (`atoms/1`, below: linear in the bytes,
  # never recursing on them, never creating an atom); the term is decoded
  # only if the atoms it would create fit the node's budget (application env
  # `:synod, :raft_atom_budget`, default 100,000 atoms created this way for
  # the life of the VM) and leave the atom table a reserve of 10% of its
  # limit. Otherwise `{:error, {:atom_budget, new, left}}`, and nothing was
  # created. Compressed terms, and external tags that term_to_binary does
  # not write (atom cache references, old funs, LOCAL_EXT), are decoded only
  # with [:safe].

  @default_budget 100_000
  @counter {__MODULE__, :created}

  @doc """
  Decodes `bin`: `{:ok, term}`, `{:error, {:atom_budget, new_atoms,
  budget_left}}`, or `{:error, :bad_term}` (not a term, or a term that
  only an unsafe decode could take).
  """
  @spec decode(binary()) :: {:ok, term()} | {:error, term()}
  def decode(bin) when is_binary(bin) do
    {:ok, :erlang.binary_to_term(bin, [:safe])}
  rescue
    ArgumentError -> decode_new_atoms(bin)
  end

  defp decode_new_atoms(bin) do
    with {:ok, names} <- atoms(bin) do
      new = Enum.count(names, &(not exists?(&1)))
      left = budget_left()

      if new <= left do
        term = :erlang.binary_to_term(bin)
        :counters.add(counter(), 1, new)
        {:ok, term}
      else
        {:error, {:atom_budget, new, left}}
      end
    end
  rescue
    ArgumentError -> {:error, :bad_term}
  end

  @doc "Atoms created so far on this node by `decode/1`."
  @spec created() :: non_neg_integer()
  def created, do: :counters.get(counter(), 1)

  defp budget_left do
    budget = Application.get_env(:synod, :raft_atom_budget, @default_budget)
    limit = :erlang.system_info(:atom_limit)
    headroom = limit - div(limit, 10) - :erlang.system_info(:atom_count)
    max(min(budget - created(), headroom), 0)
  end

  defp counter do
    case :persistent_term.get(@counter, nil) do
      nil ->
        ref = :counters.new(1, [:atomics])
        :persistent_term.put(@counter, ref)
        ref

      ref ->
        ref
    end
  end

  defp exists?({:latin1, name}),
    do: exists?({:utf8, :unicode.characters_to_binary(name, :latin1)})

  defp exists?({:utf8, name}) do
    _ = :erlang.binary_to_existing_atom(name, :utf8)
    true
  rescue
    ArgumentError -> false
  end

  @doc """
  The distinct atom names in an external term (`{:latin1 | :utf8, name}`),
  without creating any: `{:ok, names}` or `{:error, :bad_term}`.
  """
  @spec atoms(binary()) :: {:ok, [{:latin1 | :utf8, binary()}]} | {:error, :bad_term}
  def atoms(<<131, rest::binary>>), do: scan(rest, 1, MapSet.new())
  def atoms(_), do: {:error, :bad_term}

  # `pending` terms are still to be read from `bin`. Every term takes at
  # least one byte, so more pending terms than bytes is malformed: the scan
  # is linear in the input, whatever arities it claims.
  defp scan(<<>>, 0, acc), do: {:ok, MapSet.to_list(acc)}
  defp scan(_bin, 0, _acc), do: {:error, :bad_term}
  defp scan(bin, pending, _acc) when pending > byte_size(bin), do: {:error, :bad_term}

  defp scan(bin, pending, acc) do
    case step(bin) do
      {:atom, name, rest} -> scan(rest, pending - 1, MapSet.put(acc, name))
      {:terms, n, rest} -> scan(rest, pending - 1 + n, acc)
      :error -> {:error, :bad_term}
    end
  end

  # One term's head: {:atom, name, rest} or {:terms, children, rest}.
  defp step(<<100, len::16, name::binary-size(len), rest::binary>>),
    do: {:atom, {:latin1, name}, rest}

  defp step(<<115, len::8, name::binary-size(len), rest::binary>>),
    do: {:atom, {:latin1, name}, rest}

  defp step(<<118, len::16, name::binary-size(len), rest::binary>>),
    do: {:atom, {:utf8, name}, rest}

  defp step(<<119, len::8, name::binary-size(len), rest::binary>>),
    do: {:atom, {:utf8, name}, rest}

  defp step(<<97, _::8, rest::binary>>), do: {:terms, 0, rest}
  defp step(<<98, _::32, rest::binary>>), do: {:terms, 0, rest}
  defp step(<<99, _::binary-size(31), rest::binary>>), do: {:terms, 0, rest}
  defp step(<<70, _::64, rest::binary>>), do: {:terms, 0, rest}
  defp step(<<106, rest::binary>>), do: {:terms, 0, rest}
  defp step(<<107, len::16, _::binary-size(len), rest::binary>>), do: {:terms, 0, rest}
  defp step(<<109, len::32, _::binary-size(len), rest::binary>>), do: {:terms, 0, rest}
  defp step(<<77, len::32, _::8, _::binary-size(len), rest::binary>>), do: {:terms, 0, rest}
  defp step(<<110, n::8, _::8, _::binary-size(n), rest::binary>>), do: {:terms, 0, rest}
  defp step(<<111, n::32, _::8, _::binary-size(n), rest::binary>>), do: {:terms, 0, rest}
  defp step(<<104, arity::8, rest::binary>>), do: {:terms, arity, rest}
  defp step(<<105, arity::32, rest::binary>>), do: {:terms, arity, rest}
  defp step(<<116, arity::32, rest::binary>>), do: {:terms, 2 * arity, rest}
  # a list: its elements and its tail
  defp step(<<108, len::32, rest::binary>>), do: {:terms, len + 1, rest}
  # pids, ports and references: the node's atom comes first, then fixed
  # fields; the fields are skipped with the node (`node_then/2`)
  defp step(<<103, rest::binary>>), do: node_then(rest, 9)
  defp step(<<88, rest::binary>>), do: node_then(rest, 12)
  defp step(<<102, rest::binary>>), do: node_then(rest, 5)
  defp step(<<89, rest::binary>>), do: node_then(rest, 8)
  defp step(<<120, rest::binary>>), do: node_then(rest, 12)
  defp step(<<101, rest::binary>>), do: node_then(rest, 5)
  defp step(<<114, len::16, rest::binary>>), do: node_then(rest, 1 + 4 * len)
  defp step(<<90, len::16, rest::binary>>), do: node_then(rest, 4 + 4 * len)
  # fun M:F/A: two atoms and a small integer
  defp step(<<113, rest::binary>>), do: {:terms, 3, rest}
  # a closure: fixed header, then module, old index, old uniq, pid, free vars
  defp step(<<112, _size::32, _arity::8, _uniq::binary-16, _index::32, free::32, rest::binary>>),
    do: {:terms, 4 + free, rest}

  defp step(_), do: :error

  # The node atom of a pid/port/reference, then `skip` bytes of fields.
  defp node_then(bin, skip) do
    case step(bin) do
      {:atom, name, <<_::binary-size(skip), rest::binary>>} -> {:atom, name, rest}
      _ -> :error
    end
  end
end
