module gpu-shard-webhook/bench/reference

go 1.22
