module kubegate.dev/go-oracle

go 1.19
