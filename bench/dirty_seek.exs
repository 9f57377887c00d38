# What the lseek that Synod.Raft.Storage.sync/1 made before every write cost
# (docs/coordination.md, "The put path against 47d4d8d"): wall time per
# :file.position(log, :eof) on a raw file opened as the log is (prim_file's
# seek_nif runs on a dirty I/O scheduler, so each call is a trip of the
# calling process to a dirty scheduler thread and back), against the
# :atomics.get/2 that replaced it on the path. Median of 5 loops of N.
#
#   mix run bench/dirty_seek.exs [N]
#
# Wall time, so it moves with the machine's load: quote it with `uptime`.

n =
  case System.argv() do
    [n] -> String.to_integer(n)
    [] -> 20_000
  end

path = Path.join(System.tmp_dir!(), "synod-dirty-seek-#{System.unique_integer([:positive])}")
{:ok, f} = :file.open(path, [:raw, :binary, :append, :read])
:ok = :file.write(f, "a log")
cell = :atomics.new(1, signed: false)

median_us = fn fun ->
  for _ <- 1..5 do
    t0 = System.monotonic_time(:nanosecond)
    for _ <- 1..n, do: fun.()
    (System.monotonic_time(:nanosecond) - t0) / n / 1000
  end
  |> Enum.sort()
  |> Enum.at(2)
  |> Float.round(2)
end

try do
  IO.puts("file.position(log, :eof) #{median_us.(fn -> :file.position(f, :eof) end)} us per call")
  IO.puts(":atomics.get/2           #{median_us.(fn -> :atomics.get(cell, 1) end)} us per call")
after
  :file.close(f)
  File.rm(path)
end
