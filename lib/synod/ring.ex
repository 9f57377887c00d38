defmodule Synod.Ring do
  @moduledoc """
  A consistent hash ring: which member owns a key, and which members follow it.

  The ring is Karger's consistent hashing with virtual nodes, computed by a
  pure C core (`c_src/ring.c`) through a NIF. The C node links the same core,
  so every Synod member — Elixir, Erlang or C — places a key on the same owner
  for the same membership.

      iex> ring = Synod.Ring.new([:"a@127.0.0.1", :"b@127.0.0.1", :"c@127.0.0.1"])
      iex> Synod.Ring.lookup(ring, "user:42") in [:"a@127.0.0.1", :"b@127.0.0.1", :"c@127.0.0.1"]
      true
      iex> length(Synod.Ring.owners(ring, "user:42", 2))
      2

  ## Members and keys

  Members are atoms (typically node names) or binaries, optionally weighted:
  `{member, weight}` with an integer weight in 1..1024 (default 1). A member
  of weight 2 gets twice the points, so about twice the keys. Members are
  identified by their name bytes: `:a` and `"a"` are the same member.

  Keys are binaries or atoms. An atom is hashed as its UTF-8 name, so `:foo`
  and `"foo"` land on the same owner.

  ## Options

    * `:vnodes` — points per unit of weight, 1..16384, default
      #{:synod_ring.default_vnodes()}. More points balance load better and
      cost memory (about 12 bytes a point) and build time.
    * `:seed` — the 16-byte SipHash key that places points and keys, default
      `#{inspect(:synod_ring.default_seed())}`. Rings with different seeds
      place keys differently; every member of a cluster must use the same.

  ## Values, not processes

  A ring is an immutable value (a NIF resource): share it between processes,
  keep it in `:persistent_term` or ETS, and look keys up concurrently with no
  lock and no message. `add_member/3` and `remove_member/2` return new rings.
  Bulk calls (`lookup_many/2`, `diff/3`) yield to the scheduler, so placing
  100k keys in one call never blocks a scheduler for more than about 1 ms.

  Bad arguments raise `ArgumentError` with a message naming the problem.
  See `docs/ring.md` for the algorithm, its costs and its guarantees.
  """

  @typedoc "A ring built by `new/2`: an immutable NIF resource."
  @opaque t :: reference()
  @type member :: atom() | binary()
  @type key :: atom() | binary()
  @type option :: {:vnodes, pos_integer()} | {:seed, <<_::128>>}

  @doc """
  Builds a ring from `members` (each a name or `{name, weight}`).

  Raises `ArgumentError` for an empty list, a duplicate member, a weight
  outside 1..1024, a name that is not an atom or a 1..255-byte binary, or an
  unknown or invalid option.
  """
  @spec new([member() | {member(), pos_integer()}], [option()]) :: t()
  def new(members, opts \\ []) do
    unless Keyword.keyword?(opts), do: raise(ArgumentError, "options must be a keyword list")
    translate(fn -> :synod_ring.new(members, opts) end)
  end

  @doc "The member that owns `key`."
  @spec lookup(t(), key()) :: member()
  def lookup(ring, key) do
    :synod_nif.ring_lookup(ring, key)
  catch
    :error, {:badarg, message} -> raise ArgumentError, message
  end

  @doc """
  The first `n` distinct members clockwise from `key`, owner first: the
  preference list for placing `n` replicas. When `n` exceeds the member
  count, every member is returned.
  """
  @spec owners(t(), key(), pos_integer()) :: [member()]
  def owners(ring, key, n) do
    :synod_nif.ring_owners(ring, key, n)
  catch
    :error, {:badarg, message} -> raise ArgumentError, message
  end

  @doc "Owners of many keys, in the order of `keys`."
  @spec lookup_many(t(), [key()]) :: [member()]
  def lookup_many(ring, keys), do: translate(fn -> :synod_ring.lookup_many(ring, keys) end)

  @doc """
  Keys whose owner differs between `old` and `new`, as
  `{key, old_owner, new_owner}` in the order of `keys`.
  """
  @spec diff(t(), t(), [key()]) :: [{key(), member(), member()}]
  def diff(old, new, keys), do: translate(fn -> :synod_ring.diff(old, new, keys) end)

  @doc "Members with their weights, in canonical (bytewise name) order."
  @spec members(t()) :: [{member(), pos_integer()}]
  def members(ring), do: translate(fn -> :synod_ring.members(ring) end)

  @doc "Members, `:vnodes`, `:seed` and the number of `:points`."
  @spec info(t()) :: %{
          members: [{member(), pos_integer()}],
          vnodes: pos_integer(),
          seed: <<_::128>>,
          points: pos_integer()
        }
  def info(ring), do: translate(fn -> :synod_ring.info(ring) end)

  @doc "A new ring with `member` added, keeping vnodes and seed."
  @spec add_member(t(), member(), pos_integer()) :: t()
  def add_member(ring, member, weight \\ 1),
    do: translate(fn -> :synod_ring.add_member(ring, member, weight) end)

  @doc "A new ring without `member`. Raises if it is absent or the last member."
  @spec remove_member(t(), member()) :: t()
  def remove_member(ring, member),
    do: translate(fn -> :synod_ring.remove_member(ring, member) end)

  defp translate(fun) do
    fun.()
  catch
    :error, {:badarg, message} when is_binary(message) -> raise ArgumentError, message
  end
end
