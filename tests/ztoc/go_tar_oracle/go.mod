module go_tar_oracle

go 1.19
